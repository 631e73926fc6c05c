package broker

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Host is the client listen host. If empty, 127.0.0.1 is used.
	Host string
	// Port is the client port. 0 means 4222; -1 picks a free port.
	Port int
	// MonitorPort is the HTTP monitoring port (/varz, /jsz, /healthz).
	// 0 means 8222; -1 picks a free port; -2 disables monitoring.
	MonitorPort int
	// MonitorHost is the monitoring listen host. If empty, 127.0.0.1: the
	// monitor (which shows every connection, subscription, account and
	// stream config) stays on loopback even when Host is public.
	MonitorHost string
	// MonitorToken, when set, is required as a bearer token
	// (Authorization: Bearer <token>) on every monitoring endpoint but
	// /healthz; others get 401. nats-server's monitor has no
	// authentication of its own, so with a token the endpoints are served by
	// this package, calling the server's own handlers. Empty: no token.
	MonitorToken string
	// StoreDir is the JetStream file store directory (a jetstream/ folder is
	// created in it). Required.
	StoreDir string
	// ServerName names the server; required when clustering.
	ServerName string
	// SyncAlways fsyncs every JetStream write before acknowledging it. Slower,
	// but acknowledged jobs survive power loss (see README, Durability).
	SyncAlways bool
	// MaxStore caps JetStream file storage in bytes. 0 means the server default.
	MaxStore int64
	// StoreKey, when set, encrypts JetStream's file store at rest (streams,
	// consumers, buckets; message bodies and headers) with a key derived
	// from it. Losing it loses the stored data; a restart needs the same
	// key. It protects the disk (a stolen volume or backup), not the
	// running system: every role still reads what its permissions allow.
	// Never logged.
	StoreKey string
	// StoreCipher is the at-rest cipher when StoreKey is set: "chacha"
	// (ChaCha20-Poly1305, the default) or "aes" (AES-GCM).
	StoreCipher string
	// Cluster, when non-nil, makes this server a node of a JetStream cluster.
	Cluster *ClusterConfig
	// ReadyTimeout bounds how long Start waits for the server (and, in a
	// cluster, the JetStream meta leader). 0 means 10 s.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines. The zero value discards them.
	Logger zerolog.Logger
	// Users, when non-empty, turns on authentication: only these users may
	// connect, each limited to its permissions and confined to its account
	// (see AuthConfig.ServerAccounts). In-process connections authenticate
	// too.
	Users []*server.User
	// Accounts are the NATS accounts Users belong to, with their exports,
	// imports and JetStream limits (AuthConfig.ServerAccounts). Empty: every
	// user is in the global account.
	Accounts []*server.Account
	// TLS, when non-nil, makes TCP clients use TLS with TLS.CertFile and
	// TLS.KeyFile; with TLS.CAFile set, clients must present a certificate
	// signed by it. In-process connections need no TLS.
	TLS *TLSFiles
}

// ClusterConfig makes an embedded server a cluster node.
type ClusterConfig struct {
	// Name is the cluster name, the same on every node.
	Name string
	// Host and Port are where this node listens for routes. Port -1 picks
	// a free port (ClusterURL tells which).
	Host string
	Port int
	// Routes are the nodes' route URLs, e.g. nats-route://127.0.0.1:6223.
	// List every node, this one included (a route to itself is ignored): the
	// number of routes sets the JetStream cluster size a new node expects
	// before it elects a meta leader.
	Routes []string
	// NoMetaWait makes Start return once the node accepts connections,
	// without waiting for a JetStream meta leader. A meta leader needs a
	// quorum of nodes, so a node started alone (the first of three started
	// one at a time) would otherwise fail after ReadyTimeout.
	NoMetaWait bool
	// LameDuck, when positive, makes Server.LameDuckShutdown hand this
	// node's stream and consumer leaderships to other nodes and close its
	// clients spread over this duration before stopping (rolling restarts).
	LameDuck time.Duration
}

// Defaults of the embedded server's listeners.
const (
	DefaultHost        = "127.0.0.1"
	DefaultClientPort  = 4222
	DefaultMonitorPort = 8222
	DefaultClusterPort = 6222
	// DefaultURL is where roles look for NATS when told nothing else.
	DefaultURL = "nats://127.0.0.1:4222"
)

// Server is an embedded nats-server with JetStream enabled. Create it with
// NewServer, run it with Start, stop it with Shutdown (or LameDuckShutdown).
// Its methods are safe for concurrent use.
type Server struct {
	cfg      ServerConfig
	ns       *server.Server
	log      zerolog.Logger
	lameDuck time.Duration
	monitor  *monitor // token-guarded monitoring; nil: the server's own or none

	mu      sync.Mutex
	started bool
	closed  bool
}

// NewServer checks cfg and prepares a server; it does not listen yet.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, fmt.Errorf("new nats server: store dir is required")
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		// Large payloads (1 MiB bodies plus JSON/base64 overhead) must fit.
		MaxPayload: 8 << 20,
	}
	if opts.Host == "" {
		opts.Host = DefaultHost
	}
	if opts.Port == 0 {
		opts.Port = DefaultClientPort
	}
	monHost := cfg.MonitorHost
	if monHost == "" {
		monHost = DefaultHost
	}
	monPort := cfg.MonitorPort
	if monPort == 0 {
		monPort = DefaultMonitorPort
	}
	if monPort != -2 && cfg.MonitorToken == "" {
		opts.HTTPHost, opts.HTTPPort = monHost, monPort
	}
	if cfg.MaxStore > 0 {
		opts.JetStreamMaxStore = cfg.MaxStore
	}
	if cfg.StoreKey != "" {
		switch strings.ToLower(cfg.StoreCipher) {
		case "", "chacha":
			opts.JetStreamCipher = server.ChaCha
		case "aes":
			opts.JetStreamCipher = server.AES
		default:
			return nil, fmt.Errorf("new nats server: store cipher %q: want chacha or aes", cfg.StoreCipher)
		}
		opts.JetStreamKey = cfg.StoreKey
	}
	if len(cfg.Users) > 0 {
		opts.Users = cfg.Users
	}
	if len(cfg.Accounts) > 0 {
		opts.Accounts = cfg.Accounts
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.serverOptions(opts); err != nil {
			return nil, fmt.Errorf("new nats server: %w", err)
		}
	}
	if c := cfg.Cluster; c != nil {
		if opts.ServerName == "" {
			return nil, fmt.Errorf("new nats server: cluster mode needs a server name")
		}
		opts.Cluster.Name = c.Name
		opts.Cluster.Host = c.Host
		opts.Cluster.Port = c.Port
		if opts.Cluster.Port == 0 {
			opts.Cluster.Port = DefaultClusterPort
		}
		if len(c.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		}
		if c.LameDuck > 0 {
			opts.LameDuckDuration = c.LameDuck
			opts.LameDuckGracePeriod = c.LameDuck / 2
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new nats server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{cfg.Logger}, false, false, false)
	s := &Server{cfg: cfg, ns: ns, log: cfg.Logger}
	if monPort != -2 && cfg.MonitorToken != "" {
		if monPort == -1 {
			monPort = 0
		}
		s.monitor = newMonitor(ns, net.JoinHostPort(monHost, strconv.Itoa(monPort)), cfg.MonitorToken, cfg.Logger)
	}
	if cfg.Cluster != nil {
		s.lameDuck = cfg.Cluster.LameDuck
	}
	return s, nil
}

// Start starts the server and waits until it accepts connections and
// JetStream is usable (in a cluster: has a meta leader, unless
// ClusterConfig.NoMetaWait). It fails with ErrServerNotReady (wrapped) when
// that takes longer than cfg.ReadyTimeout or ctx allows, and with
// ErrServerClosed after Shutdown. A server that failed to start is shut
// down.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if s.started {
		return fmt.Errorf("start nats server: already started")
	}
	s.started = true
	timeout := s.cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	go s.ns.Start()
	deadline := time.Now().Add(timeout)
	if !s.ns.ReadyForConnections(timeout) {
		s.stopLocked()
		return fmt.Errorf("start nats server on %s:%d: %w", s.cfg.Host, s.cfg.Port, ErrServerNotReady)
	}
	// ReadyForConnections returns before JetStream (in a cluster: the meta
	// leader) is usable; a stream created now could hang.
	cl := s.cfg.Cluster
	for cl == nil || !cl.NoMetaWait {
		st := s.ns.Healthz(&server.HealthzOptions{JSEnabledOnly: cl == nil, JSMetaOnly: cl != nil})
		if st.Status == "ok" {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stopLocked()
			return fmt.Errorf("start nats server: jetstream: %s: %w", st.Error, ErrServerNotReady)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.monitor != nil {
		if err := s.monitor.start(); err != nil {
			s.stopLocked()
			return fmt.Errorf("start nats server: %w", err)
		}
	}
	return nil
}

func (s *Server) stopLocked() {
	s.closed = true
	s.monitor.stop()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// NATS returns the underlying nats-server, for in-process connections.
func (s *Server) NATS() *server.Server { return s.ns }

// ClientURL is the URL other processes connect to, e.g. nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Name is the server name (ServerConfig.ServerName, or a generated id).
func (s *Server) Name() string { return s.ns.Name() }

// ClusterURL is the route URL other cluster nodes list in their routes, e.g.
// nats-route://127.0.0.1:6222, or "" when the server is not clustered.
func (s *Server) ClusterURL() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return "nats-route://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return ""
}

// MonitorAddr is the monitoring listener address, or "" when disabled.
func (s *Server) MonitorAddr() string {
	if s.monitor != nil {
		return s.monitor.addr()
	}
	if a := s.ns.MonitorAddr(); a != nil {
		return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return ""
}

// Shutdown stops the server and waits until it has stopped or ctx is done
// (then it returns ctx's error; the server still stops in the background).
// Clients should be drained first. Calling it again does nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.monitor.stop()
	return s.waitStopped(ctx, s.ns.Shutdown)
}

// LameDuckShutdown stops the server gracefully, for rolling restarts of
// cluster nodes: it stops accepting clients, hands its JetStream stream and
// consumer leaderships to other nodes, closes its clients spread over
// ClusterConfig.LameDuck (they reconnect to the other nodes) and waits until
// the server has stopped or ctx is done. Without a lame-duck duration it is
// Shutdown.
func (s *Server) LameDuckShutdown(ctx context.Context) error {
	if s.lameDuck <= 0 {
		return s.Shutdown(ctx)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.monitor.stop()
	return s.waitStopped(ctx, func() {
		s.ns.LameDuckShutdown()
		s.ns.Shutdown()
	})
}

// waitStopped runs stop in the background and waits for the server to stop.
func (s *Server) waitStopped(ctx context.Context, stop func()) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
		s.ns.WaitForShutdown()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats server shutdown: %w", ctx.Err())
	}
}

// natsLogger adapts zerolog to the nats-server logger interface.
type natsLogger struct{ l zerolog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug().Msgf(format, v...) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn().Msgf(format, v...) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Trace().Msgf(format, v...) }
func (n natsLogger) Tracef(format string, v ...any)  { n.l.Trace().Msgf(format, v...) }
