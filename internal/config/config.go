// Package config loads the pipeline configuration: the embedded defaults
// (configs/pipeline.yaml), overlaid by an optional file, then by
// PIPELINE_<SECTION>_<KEY> environment variables. Command-line flags are
// applied last by cmd/pipeline.
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
	"github.com/pipeline-dev/pipeline/configs"
)

// Config is the whole configuration. Field docs live in configs/pipeline.yaml.
type Config struct {
	Log      Log      `yaml:"log"`
	NATS     NATS     `yaml:"nats"`
	Streams  Streams  `yaml:"streams"`
	Origin   Origin   `yaml:"origin"`
	Executor Executor `yaml:"executor"`
	Runtime  Runtime  `yaml:"runtime"`
	Target   Target   `yaml:"target"`
}

// Log settings.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// NATS settings.
type NATS struct {
	URL           string `yaml:"url"`
	Embedded      bool   `yaml:"embedded"`
	Host          string `yaml:"host"`
	Port          int    `yaml:"port"`
	MonitorPort   int    `yaml:"monitor_port"`
	DataDir       string `yaml:"data_dir"`
	SyncAlways    bool   `yaml:"sync_always"`
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

// Streams settings.
type Streams struct {
	Replicas        int           `yaml:"replicas"`
	Storage         string        `yaml:"storage"`
	MaxJobs         int64         `yaml:"max_jobs"`
	MaxJobBytes     int64         `yaml:"max_job_bytes"`
	MaxResultBytes  int64         `yaml:"max_result_bytes"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	AckWait         time.Duration `yaml:"ack_wait"`
	MaxDeliver      int           `yaml:"max_deliver"`
	MaxAckPending   int           `yaml:"max_ack_pending"`
	DeadLetterAge   time.Duration `yaml:"dead_letter_max_age"`
	ResultRetention time.Duration `yaml:"result_retention"`
	RetentionBytes  int64         `yaml:"result_retention_max_bytes"`
}

// Origin settings.
type Origin struct {
	Enabled        bool          `yaml:"enabled"`
	ID             string        `yaml:"id"`
	Listen         string        `yaml:"listen"`
	MaxFrameBytes  int           `yaml:"max_frame_bytes"`
	HardFrameBytes int           `yaml:"hard_frame_bytes"`
	MaxBodyBytes   int           `yaml:"max_body_bytes"`
	MaxTimeoutMS   int64         `yaml:"max_timeout_ms"`
	MaxInFlight    int           `yaml:"max_in_flight"`
	RatePerConn    float64       `yaml:"rate_per_conn"`
	RateBurst      int           `yaml:"rate_burst"`
	SendQueue      int           `yaml:"send_queue"`
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	DedupWindow    time.Duration `yaml:"dedup_window"`
	AuthToken      string        `yaml:"auth_token"`
	AllowedOrigins []string      `yaml:"allowed_origins"`
}

// Executor settings.
type Executor struct {
	Count                  int           `yaml:"count"`
	ID                     string        `yaml:"id"`
	Concurrency            int           `yaml:"concurrency"`
	OpsListen              string        `yaml:"ops_listen"`
	MaxBodyBytes           int64         `yaml:"max_body_bytes"`
	MaxResponseHeaderBytes int64         `yaml:"max_response_header_bytes"`
	DefaultTimeout         time.Duration `yaml:"default_timeout"`
	MaxTimeout             time.Duration `yaml:"max_timeout"`
	MaxIdleConnsPerHost    int           `yaml:"max_idle_conns_per_host"`
	Retry                  Retry         `yaml:"retry"`
	Policy                 Policy        `yaml:"policy"`
}

// Retry is the executor's fetch retry policy.
type Retry struct {
	Attempts  int           `yaml:"attempts"`
	BaseDelay time.Duration `yaml:"base_delay"`
	MaxDelay  time.Duration `yaml:"max_delay"`
}

// Policy is the executor's destination policy.
type Policy struct {
	Allow        []string `yaml:"allow"`
	Deny         []string `yaml:"deny"`
	AllowPorts   []int    `yaml:"allow_ports"`
	DenyPorts    []int    `yaml:"deny_ports"`
	MaxRedirects int      `yaml:"max_redirects"`
	AllowPrivate bool     `yaml:"allow_private"`
}

// Runtime settings.
type Runtime struct {
	Enabled    bool          `yaml:"enabled"`
	Listen     string        `yaml:"listen"`
	MaxPayload int           `yaml:"max_payload"`
	MaxRounds  int           `yaml:"max_rounds"`
	Timeout    time.Duration `yaml:"timeout"`
}

// Target settings.
type Target struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

// Default returns the embedded defaults.
func Default() Config {
	var c Config
	if err := decode(configs.Default(), &c); err != nil {
		// The embedded file is part of the binary and covered by tests.
		panic(fmt.Sprintf("config: embedded defaults are invalid: %v", err))
	}
	return c
}

// Load returns the defaults overlaid by the file at path (if path is not
// empty) and then by environment variables from environ (os.Environ() form).
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
	return c, nil
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
