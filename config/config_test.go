package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFileThenEnvironment(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	yaml := "listen_addr: 127.0.0.1:9000\nwebsocket_public: true\nwebhook_secret: from-file\nping_period: 5s\nallowed_origins: [a.example, b.example]\nbogus_key: 1\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := Load(path, env(map[string]string{"WEBHOOK_SECRET": "from-env", "WEBSOCKET_PATH": "/ws", "MAX_CONNECTIONS": "7", "ALLOWED_ORIGINS": "x.example,y.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenAddr != "127.0.0.1:9000" || !cfg.WebsocketPublic || cfg.PingPeriod != 5*time.Second {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.WebhookSecret != "from-env" || cfg.WebsocketPath != "/ws" || cfg.MaxConnections != 7 {
		t.Errorf("environment does not win: %+v", cfg)
	}
	if strings.Join(cfg.AllowedOrigins, " ") != "x.example y.example" {
		t.Errorf("origins from env: %v", cfg.AllowedOrigins)
	}
	if cfg.WebhookPath != "/webhook" {
		t.Errorf("default lost: %q", cfg.WebhookPath)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "bogus_key") {
		t.Errorf("want a warning for bogus_key, got %v", warnings)
	}
}

func TestEnvOnlyWithoutFile(t *testing.T) {
	t.Chdir(t.TempDir()) // no ./config.yaml here
	cfg, _, err := Load("", env(map[string]string{"WEBSOCKET_ENABLED": "false", "DIRECTUS_URL": "https://cms.example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WebsocketEnabled || cfg.DirectusURL != "https://cms.example.com" {
		t.Errorf("env-only values ignored: %+v", cfg)
	}
}

func TestMissingExplicitFile(t *testing.T) {
	if _, _, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), env(nil)); err == nil {
		t.Fatal("a missing --config file must be an error")
	}
}

func TestValidationNamesTheKey(t *testing.T) {
	tests := map[string]map[string]string{
		"listen_addr":      {"LISTEN_ADDR": "nonsense"},
		"directus_url":     {"DIRECTUS_URL": "ftp://x"},
		"websocket_path":   {"WEBSOCKET_PATH": "nope"},
		"webhook_path":     {"WEBHOOK_PATH": "/websocket"},
		"max_frame_size":   {"MAX_FRAME_SIZE": "0"},
		"ping_period":      {"PING_PERIOD": "2m"},
		"bus":              {"BUS": "kafka"},
		"log_level":        {"LOG_LEVEL": "loud"},
		"directus_timeout": {"DIRECTUS_TIMEOUT": "5m"},
	}
	for key, e := range tests {
		t.Chdir(t.TempDir())
		_, _, err := Load("", env(e))
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("%v: want an error naming %s, got %v", e, key, err)
		}
	}
	_, _, err := Load("", env(map[string]string{"MAX_CONNECTIONS": "many"}))
	if err == nil {
		t.Error("a non-number for max_connections must be refused")
	}
}

// A redis_url with the wrong scheme is refused without echoing it: it may
// carry a password.
func TestRedisURLErrorHidesPassword(t *testing.T) {
	c := Default()
	c.Bus = "redis"
	c.RedisURL = "http://user:hunter2-secret@redis.example:6379/0"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "redis_url") {
		t.Fatalf("want a redis_url error, got %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("the error echoes the password: %v", err)
	}
}

func TestWebhookSecretHeader(t *testing.T) {
	c := Default()
	c.WebhookSecretHeader = "X Bad:"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "webhook_secret_header") {
		t.Fatalf("want a webhook_secret_header error, got %v", err)
	}
}

// The shipped config.yaml documents every key with its default value.
func TestConfigYAMLListsEveryKey(t *testing.T) {
	cfg, warnings, err := Load(filepath.Join("..", "config.yaml"), func(string) string { return "" })
	if err != nil || len(warnings) > 0 {
		t.Fatalf("config.yaml: %v %v", err, warnings)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("config.yaml differs from the defaults:\n got %+v\nwant %+v", cfg, Default())
	}
	raw, err := os.ReadFile(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if !regexp.MustCompile(`(?m)^` + k + `:`).Match(raw) {
			t.Errorf("config.yaml does not list %s", k)
		}
	}
}
