package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Jobs and results travel in a compact binary form (PROTOCOL.md §2 allows
// "JSON or a documented compact binary form"); JSON costs the executor and
// the origin a reflective decode per message. The form:
//
//	magic byte ('J' job, 'R' result), version byte (1), then the fields in
//	declaration order: strings and byte slices as uvarint length + bytes,
//	integers as zig-zag varints, booleans as one byte (0/1), headers as a
//	uvarint count of key/value string pairs, the result's error as a
//	presence byte then code and message.
//
// Optional integer fields follow, each as a uvarint tag and a zig-zag varint
// value, written only when not zero; decoders skip tags they do not know, so
// a field added later never breaks an older reader, and a message without
// the tail (an older writer) decodes with those fields zero.
//
// Decoders also accept the JSON form (first byte '{'), so messages written
// by an older version still decode.
const (
	magicJob     = 'J'
	magicResult  = 'R'
	codecVersion = 1
)

// Tags of the optional integer fields.
const (
	tagDelayMS     = 1 // Job.DelayMS, Result.DelayMS
	tagAttempts    = 2 // Result.Attempts
	tagWaitedNanos = 3 // Result.WaitedNanos
	tagBulkLane    = 4 // Job.BulkLane (1)
)

// errCodec reports a malformed binary message.
var errCodec = errors.New("malformed message")

type encoder struct{ b []byte }

func (e *encoder) str(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) raw(p []byte) {
	e.b = binary.AppendUvarint(e.b, uint64(len(p)))
	e.b = append(e.b, p...)
}

func (e *encoder) int(v int64) { e.b = binary.AppendVarint(e.b, v) }

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) headers(h map[string]string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(h)))
	for k, v := range h {
		e.str(k)
		e.str(v)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCodec
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) next(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string { return string(d.next(d.uvarint())) }

// raw returns a copy: the message buffer is not ours to keep.
func (d *decoder) raw() []byte {
	p := d.next(d.uvarint())
	if len(p) == 0 {
		return nil
	}
	return bytes.Clone(p)
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bool() bool {
	p := d.next(1)
	if p == nil {
		return false
	}
	if p[0] > 1 {
		d.fail()
	}
	return p[0] == 1
}

func (d *decoder) headers() map[string]string {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	if n > uint64(len(d.b))/2 { // each pair takes at least two bytes
		d.fail()
		return nil
	}
	h := make(map[string]string, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.str()
		h[k] = d.str()
	}
	return h
}

// tagged writes an optional integer field (nothing when v is 0).
func (e *encoder) tagged(tag uint64, v int64) {
	if v != 0 {
		e.b = binary.AppendUvarint(e.b, tag)
		e.int(v)
	}
}

// tail reads the optional fields after the fixed ones, passing each to set
// (which ignores tags it does not know).
func (d *decoder) tail(set func(tag uint64, v int64)) {
	for d.err == nil && len(d.b) > 0 {
		tag := d.uvarint()
		v := d.int()
		if d.err == nil {
			set(tag, v)
		}
	}
}

func (d *decoder) header(magic byte) {
	p := d.next(2)
	if p == nil || p[0] != magic || p[1] != codecVersion {
		d.fail()
	}
}

func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCodec
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

func encodeJob(j *Job) []byte {
	e := encoder{b: make([]byte, 0, 128+len(j.URL)+len(j.Body)+len(j.Continuation.State))}
	e.b = append(e.b, magicJob, codecVersion)
	e.str(j.ID)
	e.str(j.Origin)
	e.str(j.ClientID)
	e.str(j.URL)
	e.str(j.Method)
	e.headers(j.Headers)
	e.raw(j.Body)
	e.int(j.TimeoutMS)
	e.bool(j.Retry)
	e.int(j.ReceivedAt)
	e.str(j.Continuation.Name)
	e.raw(j.Continuation.State)
	e.tagged(tagDelayMS, j.DelayMS)
	if j.BulkLane {
		e.tagged(tagBulkLane, 1)
	}
	return e.b
}

func decodeJob(data []byte) (*Job, error) {
	d := decoder{b: data}
	d.header(magicJob)
	j := &Job{}
	j.ID = d.str()
	j.Origin = d.str()
	j.ClientID = d.str()
	j.URL = d.str()
	j.Method = d.str()
	j.Headers = d.headers()
	j.Body = d.raw()
	j.TimeoutMS = d.int()
	j.Retry = d.bool()
	j.ReceivedAt = d.int()
	j.Continuation.Name = d.str()
	j.Continuation.State = d.raw()
	d.tail(func(tag uint64, v int64) {
		switch tag {
		case tagDelayMS:
			j.DelayMS = v
		case tagBulkLane:
			j.BulkLane = v == 1
		}
	})
	return j, d.done("job")
}

func encodeResult(r *Result) []byte {
	e := encoder{b: make([]byte, 0, 160+len(r.Body)+len(r.Continuation.State))}
	e.b = append(e.b, magicResult, codecVersion)
	e.str(r.JobID)
	e.str(r.Origin)
	e.str(r.ClientID)
	e.int(int64(r.Status))
	e.headers(r.Headers)
	e.raw(r.Body)
	e.bool(r.Truncated)
	e.int(int64(r.Attempt))
	e.str(r.Executor)
	e.bool(r.Error != nil)
	if r.Error != nil {
		e.str(string(r.Error.Code))
		e.str(r.Error.Message)
	}
	e.int(r.ReceivedAt)
	e.int(r.StoredAt)
	e.int(r.PickedAt)
	e.int(r.FetchNanos)
	e.str(r.Continuation.Name)
	e.raw(r.Continuation.State)
	e.tagged(tagDelayMS, r.DelayMS)
	e.tagged(tagAttempts, int64(r.Attempts))
	e.tagged(tagWaitedNanos, r.WaitedNanos)
	return e.b
}

func decodeResult(data []byte) (*Result, error) {
	d := decoder{b: data}
	d.header(magicResult)
	r := &Result{}
	r.JobID = d.str()
	r.Origin = d.str()
	r.ClientID = d.str()
	r.Status = int(d.int())
	r.Headers = d.headers()
	r.Body = d.raw()
	r.Truncated = d.bool()
	r.Attempt = int(d.int())
	r.Executor = d.str()
	if d.bool() {
		r.Error = &Error{Code: Code(d.str()), Message: d.str()}
	}
	r.ReceivedAt = d.int()
	r.StoredAt = d.int()
	r.PickedAt = d.int()
	r.FetchNanos = d.int()
	r.Continuation.Name = d.str()
	r.Continuation.State = d.raw()
	d.tail(func(tag uint64, v int64) {
		switch tag {
		case tagDelayMS:
			r.DelayMS = v
		case tagAttempts:
			r.Attempts = int(v)
		case tagWaitedNanos:
			r.WaitedNanos = v
		}
	})
	return r, d.done("result")
}
