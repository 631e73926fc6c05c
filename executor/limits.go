package executor

import (
	"net"
	"net/url"
	"strings"
	"sync"
)

// DefaultPerHostConcurrency is Config.PerHostConcurrency in DefaultConfig.
const DefaultPerHostConcurrency = 32

// parkedPerSlot sizes the bound on parked jobs: Concurrency × parkedPerSlot
// jobs may wait for a busy host without holding an executor slot.
const parkedPerSlot = 16

// destination returns the host:port a job's fetch goes to (lower-case host,
// the scheme's default port made explicit), or "" when the URL is unusable
// or the destination policy refuses it: such a job fails at once and needs
// no host slot.
func (f *Fetcher) destination(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	if err := f.cfg.Policy.CheckURL(u); err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// gateResult says what hostGate.acquire did with a task.
type gateResult int

const (
	// gateRun: the task holds a host slot; run it now.
	gateRun gateResult = iota
	// gateParked: the gate keeps the task; the caller drops it and frees
	// its executor slot. A worker that releases the host picks it up.
	gateParked
	// gateWait: the park list is full; the caller keeps its executor slot
	// and waits on task.ready.
	gateWait
	// gateClosed: the executor is stopping; give the job back.
	gateClosed
)

// hostGate caps fetches in flight per destination host and holds the jobs
// that wait for a busy host. Waiting jobs are kept per host and, inside a
// host, per origin, and a freed host slot goes to the origins in turn, so one
// origin's many jobs to a host cannot push another origin's job to the back
// of that host's line.
//
// A waiting job is "parked" (it holds no executor slot: its worker
// goroutine ends) while fewer than maxParked jobs are parked; beyond that,
// the worker keeps its executor slot and waits, so a flood of jobs to busy
// hosts ends up slowing this executor's intake instead of growing memory
// without bound. Either way the job is kept alive with in-progress acks and
// never nak'd for waiting, so waiting costs none of its deliveries.
//
// A hostGate is safe for concurrent use.
type hostGate struct {
	limit     int
	maxParked int

	mu     sync.Mutex
	hosts  map[string]*hostLine
	parked int  // tasks waiting without an executor slot
	queued int  // all waiting tasks
	closed bool // stop: acquire refuses, everything waiting was handed back
}

// hostLine is one host's slots in use and its waiting tasks, by origin.
type hostLine struct {
	active  int
	byOrig  map[string][]*task
	turn    []string // origins with waiting tasks, in serving order
	waiting int
}

func newHostGate(limit, maxParked int) *hostGate {
	return &hostGate{limit: limit, maxParked: maxParked, hosts: make(map[string]*hostLine)}
}

// acquire takes a slot on t.host for t, or queues t (see gateResult).
// onWait runs under the gate's lock for a task that is queued (it must not
// call back into the gate).
func (g *hostGate) acquire(t *task, onWait func(*task)) gateResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return gateClosed
	}
	h := g.hosts[t.host]
	if h == nil {
		h = &hostLine{byOrig: make(map[string][]*task)}
		g.hosts[t.host] = h
	}
	if h.active < g.limit {
		h.active++
		return gateRun
	}
	res := gateParked
	if g.parked >= g.maxParked {
		t.ready = make(chan struct{})
		res = gateWait
	} else {
		g.parked++
	}
	q := h.byOrig[t.origin]
	if len(q) == 0 {
		h.turn = append(h.turn, t.origin)
	}
	h.byOrig[t.origin] = append(q, t)
	h.waiting++
	g.queued++
	onWait(t)
	return res
}

// release gives back a slot of host. When tasks wait for the host, the slot
// passes to the next one, origins in turn: a parked task is returned for
// the caller to run on the slot (and on its executor slot); a task whose
// worker waits is woken and nil returned. nil means the slot is free.
// onResume runs under the gate's lock for the task taken off the line.
func (g *hostGate) release(host string, onResume func(*task)) *task {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.hosts[host]
	if h == nil {
		return nil
	}
	if h.waiting == 0 {
		h.active--
		if h.active <= 0 {
			delete(g.hosts, host)
		}
		return nil
	}
	origin := h.turn[0]
	q := h.byOrig[origin]
	t := q[0]
	q[0] = nil
	q = q[1:]
	h.turn = h.turn[1:]
	if len(q) == 0 {
		delete(h.byOrig, origin)
	} else {
		h.byOrig[origin] = q
		h.turn = append(h.turn, origin)
	}
	h.waiting--
	g.queued--
	onResume(t)
	if t.ready != nil {
		close(t.ready)
		return nil
	}
	g.parked--
	return t
}

// close refuses further acquires and returns every parked task; the caller
// gives them back to JetStream. Tasks whose worker waits are woken with
// aborted set. onDrop runs under the lock for every waiting task.
func (g *hostGate) close(onDrop func(*task)) []*task {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	var out []*task
	for _, h := range g.hosts {
		for _, o := range h.turn {
			for _, t := range h.byOrig[o] {
				onDrop(t)
				if t.ready != nil {
					t.aborted = true
					close(t.ready)
					continue
				}
				out = append(out, t)
			}
		}
		h.byOrig = map[string][]*task{}
		h.turn = nil
		h.waiting = 0
	}
	g.parked, g.queued = 0, 0
	return out
}

// waiting returns the number of tasks waiting for a busy host.
func (g *hostGate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.queued
}
