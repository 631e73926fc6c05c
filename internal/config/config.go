// Package config loads the pipeline configuration: the built-in defaults
// (Default: each role's own, written once in that role's code), overlaid by
// an optional YAML file, then by PIPELINE_<SECTION>_<KEY> environment
// variables. Command-line flags are applied last by cmd/pipeline, over the
// same structs. configs/pipeline.yaml documents every key with its default;
// a test holds it to Default().
package config

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/target"
	"github.com/pipeline-dev/pipeline/origin"
)

// Config is the whole configuration. Each section is the owning role's own
// Config type (origin.Config, executor.Config, broker.StreamsConfig,
// target.Config, ...), so a setting is one field with one default, written
// in that role's code. configs/pipeline.yaml documents every key and a test
// holds it to Default().
type Config struct {
	Log      Log                  `yaml:"log"`
	NATS     NATS                 `yaml:"nats"`
	Streams  broker.StreamsConfig `yaml:"streams"`
	Origin   Origin               `yaml:"origin"`
	Executor Executor             `yaml:"executor"`
	Runtime  Runtime              `yaml:"runtime"`
	Target   target.Config        `yaml:"target"`
}

// Log settings.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// NATS is the `nats` section: where the roles find NATS, and the embedded
// server (`pipeline up --embedded-nats`, `pipeline nats`). ServerConfig and
// ConnConfig are the one place it turns into broker settings.
type NATS struct {
	URL           string `yaml:"url"`
	Embedded      bool   `yaml:"embedded"`
	Host          string `yaml:"host"`
	Port          int    `yaml:"port"`
	MonitorPort   int    `yaml:"monitor_port"`
	MonitorHost   string `yaml:"monitor_host"`
	MonitorToken  string `yaml:"monitor_token"`
	DataDir       string `yaml:"data_dir"`
	SyncAlways    bool   `yaml:"sync_always"`
	StoreKey      string `yaml:"store_key"`
	StoreCipher   string `yaml:"store_cipher"`
	SubjectPrefix string `yaml:"subject_prefix"`
	User          string `yaml:"user"`
	Password      string `yaml:"password"`
	Token         string `yaml:"token"`
	// Auth configures per-role NATS users (configs/auth/).
	Auth broker.AuthConfig `yaml:"auth"`
	// TLS configures TLS for TCP NATS connections.
	TLS broker.TLSFiles `yaml:"tls"`
	// ServerName and Cluster are read by `pipeline nats` (one cluster node).
	ServerName string      `yaml:"server_name"`
	Cluster    NATSCluster `yaml:"cluster"`
}

// NATSCluster makes the server of `pipeline nats` a JetStream cluster node
// when Name is set.
type NATSCluster struct {
	Name     string        `yaml:"name"`
	Host     string        `yaml:"host"`
	Port     int           `yaml:"port"`
	Routes   []string      `yaml:"routes"`
	LameDuck time.Duration `yaml:"lame_duck"`
}

// Origin is the `origin` section: whether this process runs an origin, and
// its settings.
type Origin struct {
	Enabled       bool `yaml:"enabled"`
	origin.Config `yaml:",inline"`
}

// Executor is the `executor` section: how many executors this process runs,
// where a lone executor process serves its ops endpoints, and their
// settings.
type Executor struct {
	Count           int    `yaml:"count"`
	OpsListen       string `yaml:"ops_listen"`
	executor.Config `yaml:",inline"`
}

// Runtime settings.
type Runtime struct {
	Enabled    bool          `yaml:"enabled"`
	Listen     string        `yaml:"listen"`
	MaxPayload int           `yaml:"max_payload"`
	MaxRounds  int           `yaml:"max_rounds"`
	Timeout    time.Duration `yaml:"timeout"`
	// AuthToken, when set, is required as a bearer token on the runtime's
	// HTTP side (/rpc/<fn>, /metrics); the origin's /call?via=http sends it.
	AuthToken string `yaml:"auth_token"`
}

// Default returns the built-in defaults: each role's own defaults, plus
// which roles `pipeline up` runs.
func Default() Config {
	return Config{
		Log: Log{Level: "info", Format: "auto"},
		NATS: NATS{
			URL:           broker.DefaultURL,
			Host:          broker.DefaultHost,
			Port:          broker.DefaultClientPort,
			MonitorPort:   broker.DefaultMonitorPort,
			MonitorHost:   broker.DefaultHost,
			StoreCipher:   "chacha",
			DataDir:       "./data",
			SubjectPrefix: broker.DefaultPrefix,
			Auth:          broker.AuthConfig{OriginMaxStore: broker.DefaultOriginMaxStore},
			Cluster: NATSCluster{
				Host:     broker.DefaultHost,
				Port:     broker.DefaultClusterPort,
				Routes:   []string{},
				LameDuck: 10 * time.Second,
			},
		},
		Streams:  broker.DefaultStreamsConfig(),
		Origin:   Origin{Enabled: true, Config: origin.DefaultConfig()},
		Executor: Executor{Count: 2, OpsListen: "127.0.0.1:9091", Config: executor.DefaultConfig()},
		Runtime: Runtime{
			Enabled:    true,
			Listen:     "127.0.0.1:8788",
			MaxPayload: 1 << 20,
			MaxRounds:  1_000_000,
			Timeout:    5 * time.Second,
		},
		Target: target.DefaultConfig(),
	}
}

// Load returns the defaults overlaid by the file at path (if path is not
// empty) and then by environment variables from environ (os.Environ() form).
// An unknown key, a value of the wrong type, a value out of range (such as
// a negative destination rate) or an unreadable file is an error naming the
// setting.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("load config: %w", err)
		}
		if err := decode(data, &c); err != nil {
			return c, fmt.Errorf("load config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, fmt.Errorf("load config: %w", err)
	}
	if err := c.Executor.Validate(); err != nil {
		return c, fmt.Errorf("load config: %w", err)
	}
	return c, nil
}

// AllowTarget adds the bundled test target's address (target.listen) to the
// executors' destination policy when the target is enabled, so that the
// allow-list follows the target wherever it listens, and holds no entry for
// it when it is disabled. Call it once every layer (file, env, flags) has
// been applied. A listen address with port 0 is skipped: the address is
// known only once the target runs, and whoever starts it allows it then.
func (c *Config) AllowTarget() {
	if !c.Target.Enabled || c.Target.Listen == "" || strings.HasSuffix(c.Target.Listen, ":0") {
		return
	}
	for _, a := range c.Executor.Policy.Allow {
		if strings.EqualFold(a, c.Target.Listen) {
			return
		}
	}
	c.Executor.Policy.Allow = append(c.Executor.Policy.Allow, c.Target.Listen)
}

// ServerConfig is the embedded server's configuration from the nats
// section: the one builder `pipeline up --embedded-nats` and `pipeline nats`
// share. With clustered set, nats.cluster makes the server a cluster node
// (checked: a name, a server name and routes); without it the cluster
// settings are ignored. It fails on incomplete settings.
func (n NATS) ServerConfig(clustered bool) (broker.ServerConfig, error) {
	scfg := broker.ServerConfig{
		Host:         n.Host,
		Port:         n.Port,
		MonitorPort:  n.MonitorPort,
		MonitorHost:  n.MonitorHost,
		MonitorToken: n.MonitorToken,
		StoreDir:     n.DataDir,
		ServerName:   n.ServerName,
		SyncAlways:   n.SyncAlways,
		StoreKey:     n.StoreKey,
		StoreCipher:  n.StoreCipher,
		TLS:          n.tls(),
	}
	if scfg.StoreDir == "" {
		return scfg, fmt.Errorf("nats: a data dir is required (--data-dir, nats.data_dir)")
	}
	users, accounts, err := n.Auth.ServerAccounts(broker.Subjects{Prefix: n.SubjectPrefix})
	if err != nil {
		return scfg, fmt.Errorf("nats: users: %w", err)
	}
	scfg.Users, scfg.Accounts = users, accounts
	cl := n.Cluster
	if !clustered {
		return scfg, nil
	}
	if cl.Name == "" {
		if len(cl.Routes) > 0 {
			return scfg, fmt.Errorf("nats: routes given without a cluster name (--cluster-name, nats.cluster.name)")
		}
		return scfg, nil
	}
	if n.ServerName == "" {
		return scfg, fmt.Errorf("nats: cluster %q: each node needs a unique server name (--name, nats.server_name)", cl.Name)
	}
	if len(cl.Routes) == 0 {
		return scfg, fmt.Errorf("nats: cluster %q: list every node's route URL (--routes, nats.cluster.routes)", cl.Name)
	}
	for _, r := range cl.Routes {
		if !strings.Contains(r, "://") {
			return scfg, fmt.Errorf("nats: route %q: want nats-route://HOST:PORT", r)
		}
	}
	scfg.Cluster = &broker.ClusterConfig{
		Name:   cl.Name,
		Host:   cl.Host,
		Port:   cl.Port,
		Routes: cl.Routes,
		// Nodes start one at a time: the first cannot have a meta leader
		// (no quorum) until a second one is up.
		NoMetaWait: true,
		LameDuck:   cl.LameDuck,
	}
	return scfg, nil
}

// ConnConfig is the connection configuration of one role from the nats
// section: the one builder every command uses. With per-role users on
// (nats.auth), the role connects as its own user with its own inbox prefix.
// It fails when the role has no credentials configured.
func (n NATS) ConnConfig(name string, role broker.Role, originID string) (broker.ConnConfig, error) {
	cc := broker.ConnConfig{
		URLs:     n.URL,
		Name:     name,
		User:     n.User,
		Password: n.Password,
		Token:    n.Token,
		TLS:      n.tls(),
	}
	if err := n.Auth.Apply(&cc, role, originID); err != nil {
		return cc, fmt.Errorf("%s: %w", name, err)
	}
	return cc, nil
}

// tls is the TLS setting for TCP connections, or nil when unset.
func (n NATS) tls() *broker.TLSFiles {
	t := n.TLS
	if t.CAFile == "" && t.CertFile == "" {
		return nil
	}
	return &t
}

func decode(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err.Error() != "EOF" {
		return err
	}
	return nil
}

// applyEnv sets fields from PIPELINE_<SECTION>_<KEY> variables; nested
// sections join with '_' (PIPELINE_EXECUTOR_POLICY_ALLOW). Lists are
// comma-separated.
func applyEnv(c *Config, environ []string) error {
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "PIPELINE_") {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(k, "PIPELINE_"))
		found, err := setByPath(reflect.ValueOf(c).Elem(), key, v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if !found {
			return fmt.Errorf("%s: no such setting", k)
		}
	}
	return nil
}

func setByPath(v reflect.Value, key, val string) (bool, error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("yaml")
		f := v.Field(i)
		if name == ",inline" {
			if found, err := setByPath(f, key, val); found || err != nil {
				return found, err
			}
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
			if rest, ok := strings.CutPrefix(key, name+"_"); ok {
				if found, err := setByPath(f, rest, val); found || err != nil {
					return found, err
				}
			}
			continue
		}
		if name == key {
			return true, setValue(f, val)
		}
	}
	return false, nil
}

func setValue(f reflect.Value, s string) error {
	if f.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Float64:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		f.SetFloat(v)
	case reflect.Slice:
		parts := []string{}
		if s != "" {
			parts = strings.Split(s, ",")
		}
		out := reflect.MakeSlice(f.Type(), 0, len(parts))
		for _, p := range parts {
			e := reflect.New(f.Type().Elem()).Elem()
			if err := setValue(e, strings.TrimSpace(p)); err != nil {
				return err
			}
			out = reflect.Append(out, e)
		}
		f.Set(out)
	default:
		return fmt.Errorf("unsupported setting type %s", f.Type())
	}
	return nil
}
