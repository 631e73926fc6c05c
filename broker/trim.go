package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TrimStats says what one TrimResults call did.
type TrimStats struct {
	// Purged is the number of results dropped, by every purge of the call.
	Purged uint64
	// OverBytes is true when the results stream was at or above its trim
	// threshold (TrimThreshold): every acknowledged result was dropped,
	// whatever its age.
	OverBytes bool
	// Lagging are the origins with a results consumer (either lane) that
	// reports results pending or unacknowledged. The server counts new
	// results a moment after storing them, so this can miss the newest;
	// what is dropped never depends on it (each lane's ack floor bounds it).
	Lagging []string
}

// TrimThreshold is the results stream size (bytes) from which TrimResults
// drops every acknowledged result regardless of age: the smaller of
// FinishedMaxBytes and three quarters of MaxResultBytes (defaults applied),
// so a stream that fills up makes room for new results before executors
// have to hold theirs.
func TrimThreshold(cfg StreamsConfig) int64 {
	c := cfg.withDefaults()
	return min(c.FinishedMaxBytes, c.MaxResultBytes/4*3)
}

// streamTrimThreshold is TrimThreshold for a stream whose actual size cap
// is maxBytes (its configuration, which the last role to provision it set):
// a caller whose own MaxResultBytes is larger must not wait for bytes the
// stream can never hold.
func streamTrimThreshold(c StreamsConfig, maxBytes int64) int64 {
	t := TrimThreshold(c)
	if maxBytes > 0 {
		t = min(t, maxBytes/4*3)
	}
	return t
}

// TrimInterval is how often an executor should call TrimResults under cfg:
// a quarter of the result retention (FinishedTTL, defaults applied), at
// most 10 s, at least 1 s.
func TrimInterval(cfg StreamsConfig) time.Duration {
	c := cfg.withDefaults()
	return max(min(c.FinishedTTL/4, 10*time.Second), time.Second)
}

// TrimResults drops results that every reader is done with from the results
// stream (ResultsStream), which keeps results after their origin acknowledged
// them as the jobs' finished records and has no age limit of its own.
//
// A result is dropped when its origin's results consumer (OriginConsumer)
// has acknowledged it and either it was stored longer than the result
// retention ago (cfg.FinishedTTL, defaults applied; negative: no retention,
// acknowledged results go at once) or the stream holds at least
// TrimThreshold(cfg) bytes, or three quarters of the stream's own MaxBytes if
// less (then every acknowledged result goes, the oldest
// being gone first as purges run in sequence order). A result its origin has
// not acknowledged is never dropped, however old.
//
// How: the stream info is read first (last sequence, bytes, first time),
// then the consumers named OriginConsumer(id) and OriginBulkConsumer(id),
// one per lane of each origin. A lane's bound is the first sequence its
// consumer may still need: its ack floor plus one (not the stream's end
// when the consumer reports nothing pending: that count lags a result just
// stored, and trusting it dropped unread results in a test). One unfiltered
// purge up to the lowest bound (and no further than the retention cutoff)
// drops whole blocks cheaply; lanes whose bound is above that (another
// lane lags, or is idle with its floor at its last result) get a purge
// filtered on their consumer's filter subject, so that one origin that is
// down, or one lane behind, does not keep every other finished result past
// its retention.
//
// Results on the subjects of an origin without a results consumer do not
// hold anything back: they are dropped by the unfiltered purge like
// acknowledged ones, once older than the retention (or over the
// threshold) and below every lane's ack floor. An origin creates its consumer (or Provision does, for a
// tenant) before it enqueues its first job, so such results belong to no
// origin that could still read them.
//
// It fails, having dropped nothing, when the stream info, the consumer list
// or the retention cutoff cannot be read; a failing purge returns the error
// with the stats of the purges done before it. It is safe to call
// concurrently from many processes: every purge only drops results that any
// caller would drop, and purging what is already gone is a no-op.
func TrimResults(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig, now time.Time) (TrimStats, error) {
	var stats TrimStats
	c := cfg.withDefaults()
	st, err := js.Stream(ctx, ResultsStream)
	if err != nil {
		return stats, fmt.Errorf("trim results: stream info: %w", err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return stats, nil
	}
	end := state.LastSeq + 1 // purge up to end: everything stored so far

	// bounds: by consumer filter (a lane of one origin).
	bounds := map[string]uint64{}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		id, ok := strings.CutPrefix(ci.Name, OriginConsumer(""))
		if !ok {
			id, ok = strings.CutPrefix(ci.Name, OriginBulkConsumer(""))
		}
		filter := ci.Config.FilterSubject
		if !ok || id == "" || filter == "" {
			continue
		}
		// The ack floor, even when the consumer says nothing is pending:
		// its pending count follows new results a moment after they are
		// stored (the server counts them asynchronously), so "nothing
		// pending" can be a result just stored and not read yet. Below
		// the floor every result was read and acknowledged.
		bounds[filter] = min(ci.AckFloor.Stream+1, end)
		if (ci.NumPending != 0 || ci.NumAckPending != 0) && !slices.Contains(stats.Lagging, id) {
			stats.Lagging = append(stats.Lagging, id)
		}
	}
	if err := lister.Err(); err != nil {
		return TrimStats{}, fmt.Errorf("trim results: list consumers: %w", err)
	}

	// cut: results stored at or after it are within their retention.
	var cut uint64
	switch {
	case state.Bytes >= uint64(streamTrimThreshold(c, st.CachedInfo().Config.MaxBytes)):
		stats.OverBytes = true
		cut = end
	case c.FinishedTTL < 0:
		cut = end
	default:
		since := now.Add(-c.FinishedTTL)
		if !state.FirstTime.Before(since) {
			return stats, nil // nothing is old enough
		}
		if cut, err = firstSeqSince(ctx, js, since, state); err != nil {
			return TrimStats{}, fmt.Errorf("trim results: %w", err)
		}
	}

	global := cut
	for _, b := range bounds {
		global = min(global, b)
	}
	if global > state.FirstSeq {
		n, err := purgeResults(ctx, js, "", global)
		stats.Purged += n
		if err != nil {
			return stats, fmt.Errorf("trim results: purge up to %d: %w", global, err)
		}
	}
	for filter, b := range bounds {
		upTo := min(cut, b)
		if upTo <= global || upTo <= state.FirstSeq {
			continue
		}
		n, err := purgeResults(ctx, js, filter, upTo)
		stats.Purged += n
		if err != nil {
			return stats, fmt.Errorf("trim results: purge %s up to %d: %w", filter, upTo, err)
		}
	}
	return stats, nil
}

// firstSeqSince returns the sequence of the first result stored at or after
// since (a direct get by start time), or state.LastSeq+1 when there is none.
// A direct get may be answered by a replica that has not stored the newest
// results yet: "none" is believed only when the stream's last result is
// older than since; otherwise state.FirstSeq is returned (drop nothing by
// age this time).
func firstSeqSince(ctx context.Context, js jetstream.JetStream, since time.Time, state jetstream.StreamState) (uint64, error) {
	// next_by_subj ">" makes the server step over interior deletes should
	// its time lookup land on one (a plain start_time get loads exactly
	// that sequence and would answer 404).
	req, err := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
		NextFor   string    `json:"next_by_subj"`
	}{since.UTC(), ">"})
	if err != nil {
		return 0, fmt.Errorf("direct get request: %w", err)
	}
	subj := apiPrefix(js) + "DIRECT.GET." + ResultsStream
	msg, err := js.Conn().RequestWithContext(ctx, subj, req)
	if err != nil {
		return 0, fmt.Errorf("direct get by start time: %w", err)
	}
	if status := msg.Header.Get(statusHeader); status != "" {
		if status == strconv.Itoa(http.StatusNotFound) {
			if state.LastTime.Before(since) {
				return state.LastSeq + 1, nil
			}
			return state.FirstSeq, nil
		}
		return 0, fmt.Errorf("direct get by start time: status %s %s", status, msg.Header.Get(descriptionHeader))
	}
	seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("direct get by start time: bad %s header %q: %w", jetstream.SequenceHeader, msg.Header.Get(jetstream.SequenceHeader), err)
	}
	return seq, nil
}

// purgeResults purges the results stream up to (not including) sequence
// upTo, only on subject filter when it is not empty, and returns how many
// messages went. It sends the request that jetstream.Stream.Purge sends
// (same API subject and body) but reads the count, which Purge drops.
func purgeResults(ctx context.Context, js jetstream.JetStream, filter string, upTo uint64) (uint64, error) {
	req, err := json.Marshal(jetstream.StreamPurgeRequest{Sequence: upTo, Subject: filter})
	if err != nil {
		return 0, fmt.Errorf("purge request: %w", err)
	}
	msg, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.PURGE."+ResultsStream, req)
	if err != nil {
		return 0, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error,omitempty"`
		Success bool                `json:"success"`
		Purged  uint64              `json:"purged"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("purge response %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	if !resp.Success {
		return 0, errors.New("purge not successful")
	}
	return resp.Purged, nil
}

// The status headers of a NATS message without payload (a direct get's 404).
const (
	statusHeader      = "Status"
	descriptionHeader = "Description"
)

// apiPrefix is the JetStream API prefix js sends its requests with.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		if !strings.HasSuffix(o.APIPrefix, ".") {
			return o.APIPrefix + "."
		}
		return o.APIPrefix
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	default:
		return jetstream.DefaultAPIPrefix
	}
}
