package executor

import (
	"net"
	"net/url"
	"strings"
	"sync"
)

// DefaultPerHostConcurrency is Config.PerHostConcurrency in DefaultConfig.
const DefaultPerHostConcurrency = 32

// parkedPerSlot sizes the park: each origin may have Concurrency ×
// parkedPerSlot jobs waiting for busy hosts in one executor, without
// holding executor slots.
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
	// gateRun: the task holds a slot on its host; run it now.
	gateRun gateResult = iota
	// gateParked: the gate keeps the task until a worker releasing its
	// host picks it up.
	gateParked
	// gateClosed: the executor is stopping; give the job back.
	gateClosed
)

// hostGate caps fetches in flight per destination host and holds the jobs
// that wait for a busy host. Waiting jobs are kept per host and, inside a
// host, per origin, and a freed host slot goes to the origins in turn, so one
// origin's many jobs to a host cannot push another origin's job to the back
// of that host's line.
//
// A waiting job is parked: it holds no executor slot (its host is checked
// before it takes one), and it is kept alive with in-progress acks, never
// nak'd, so waiting costs none of its deliveries. At most maxParked jobs of
// one origin are parked; beyond that, acquire blocks the calling delivery
// goroutine (that origin's own pull) until one of its parked jobs leaves.
// So a flood to busy hosts slows only its own origin's intake, bounds the
// memory one origin can hold here, and never takes the executor slots or
// park places other origins need.
//
// A hostGate is safe for concurrent use.
type hostGate struct {
	limit     int
	limitOf   func(host string) int // per-host override of limit; nil: none
	maxParked int
	done      chan struct{} // closed by close

	mu     sync.Mutex
	hosts  map[string]*hostLine
	places map[string]chan struct{} // per origin: one token per parked task
	closed bool                     // acquire refuses, everything parked was handed back
}

// hostLine is one host's slots in use and its waiting tasks, by origin.
type hostLine struct {
	limit   int
	active  int
	byOrig  map[string][]*task
	turn    []string // origins with waiting tasks, in serving order
	waiting int
}

func newHostGate(limit, maxParked int) *hostGate {
	return &hostGate{limit: limit, maxParked: maxParked, done: make(chan struct{}),
		hosts: make(map[string]*hostLine), places: make(map[string]chan struct{})}
}

// acquire takes a slot on t.host for t, or parks t (see gateResult). When
// every place is taken it blocks until one frees up or the gate closes;
// onBlock(true) runs before such a wait and onBlock(false) after it.
// onPark runs under the gate's lock for a task that is parked (it must not
// call back into the gate).
func (g *hostGate) acquire(t *task, onBlock func(*task, bool), onPark func(*task)) gateResult {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return gateClosed
	}
	if g.take(t.host) {
		g.mu.Unlock()
		return gateRun
	}
	places := g.places[t.origin]
	if places == nil {
		places = make(chan struct{}, g.maxParked)
		g.places[t.origin] = places
	}
	g.mu.Unlock()
	// The host is busy: take one of the origin's places in the park.
	select {
	case places <- struct{}{}:
	default:
		onBlock(t, true)
		select {
		case places <- struct{}{}:
			onBlock(t, false)
		case <-g.done:
			onBlock(t, false)
			return gateClosed
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		<-places
		return gateClosed
	case g.take(t.host): // freed meanwhile
		<-places
		return gateRun
	}
	h := g.hosts[t.host]
	q := h.byOrig[t.origin]
	if len(q) == 0 {
		h.turn = append(h.turn, t.origin)
	}
	h.byOrig[t.origin] = append(q, t)
	h.waiting++
	onPark(t)
	return gateParked
}

// take takes a slot on host if one is free. g.mu is held.
func (g *hostGate) take(host string) bool {
	h := g.hosts[host]
	if h == nil {
		h = &hostLine{limit: g.limit, byOrig: make(map[string][]*task)}
		if g.limitOf != nil {
			h.limit = g.limitOf(host)
		}
		g.hosts[host] = h
	}
	if h.active < h.limit {
		h.active++
		return true
	}
	return false
}

// release gives back a slot of host. When tasks are parked for the host,
// the slot passes to the next one, origins in turn, and that task is
// returned for the caller to run on the slot (and on its executor slot);
// nil means the slot is free. onResume runs under the gate's lock for the
// task taken out of the park.
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
	<-g.places[t.origin]
	onResume(t)
	return t
}

// close refuses further acquires, wakes blocked ones, and returns every
// parked task for the caller to give back to JetStream. onDrop runs under
// the lock for each of them.
func (g *hostGate) close(onDrop func(*task)) []*task {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	close(g.done)
	var out []*task
	for _, h := range g.hosts {
		for _, o := range h.turn {
			for _, t := range h.byOrig[o] {
				onDrop(t)
				out = append(out, t)
				<-g.places[t.origin]
			}
		}
		h.byOrig = map[string][]*task{}
		h.turn = nil
		h.waiting = 0
	}
	return out
}
