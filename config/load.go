package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/viper"
)

// Load reads the configuration: defaults, then the YAML file at path (when
// path is empty, ./config.yaml is used if it exists), then environment
// variables named after the upper-case keys (LISTEN_ADDR, WEBHOOK_SECRET...),
// which win. getenv is injected so tests do not touch the process
// environment. It returns warnings for keys of the file it does not know.
func Load(path string, getenv func(string) string) (Config, []string, error) {
	v := viper.New()
	def := Default()
	keys := Keys()
	// viper's Unmarshal only sees environment values for keys it already
	// knows, so every key gets its default registered first.
	dv := reflect.ValueOf(def)
	for i, key := range keys {
		v.SetDefault(key, dv.Field(i).Interface())
	}
	explicit := path != ""
	if path == "" {
		path = "config.yaml"
	}
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	var warnings []string
	if err := v.ReadInConfig(); err != nil {
		var pathErr *fs.PathError
		if !errors.As(err, &pathErr) || explicit {
			return Config{}, nil, fmt.Errorf("config file %s: %w", path, err)
		}
	} else {
		known := map[string]bool{}
		for _, k := range keys {
			known[k] = true
		}
		for _, k := range v.AllKeys() {
			if !known[k] {
				warnings = append(warnings, fmt.Sprintf("config file %s: unknown key %q ignored", path, k))
			}
		}
	}
	for _, key := range keys {
		if val := getenv(strings.ToUpper(key)); val != "" {
			v.Set(key, val)
		}
	}
	var cfg Config
	if err := v.Unmarshal(&cfg); err != nil {
		return Config{}, warnings, fmt.Errorf("config: %w", err)
	}
	if cfg.DirectusSecretFile != "" {
		if cfg.DirectusSecret != "" {
			return Config{}, warnings, errors.New("directus_secret and directus_secret_file: set one of them")
		}
		raw, err := os.ReadFile(cfg.DirectusSecretFile)
		if err != nil {
			return Config{}, warnings, fmt.Errorf("directus_secret_file: %w", err)
		}
		cfg.DirectusSecret = strings.TrimRight(string(raw), "\r\n")
		if cfg.DirectusSecret == "" {
			return Config{}, warnings, fmt.Errorf("directus_secret_file: %s is empty", cfg.DirectusSecretFile)
		}
	}
	cfg.AllowedOrigins = splitList(cfg.AllowedOrigins)
	cfg.TrustedProxies = splitList(cfg.TrustedProxies)
	sort.Strings(warnings)
	return cfg, warnings, cfg.Validate()
}

// Keys lists every configuration key in field order.
func Keys() []string {
	t := reflect.TypeOf(Config{})
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("mapstructure")
	}
	return keys
}

// splitList accepts both YAML lists and comma-separated environment values.
func splitList(in []string) []string {
	out := []string{}
	for _, s := range in {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// Environ adapts os.Getenv for Load.
func Environ() func(string) string { return os.Getenv }
