//! Stage one: the file as written. Every key optional; a value of the wrong type is a
//! problem naming its key (collected, not fatal here); unknown keys are collected for warnings.

use toml::{Table, Value};

/// `placement` (or the old `server.cores`): a word or a list of CPU ids.
#[derive(Debug)]
pub enum RawCores {
    Word(String),
    List(Vec<i64>),
}

/// The per-core keys: in `[cores]` for every executor, in `[[cores.override]]` for one.
#[derive(Debug, Default)]
pub struct RawExecutor {
    pub ring_depth: Option<u64>,
    pub io_memory_bytes: Option<u64>,
    pub spin_before_park_us: Option<u64>,
    pub preempt_timer_us: Option<u64>,
    pub connections_max: Option<u64>,
}

/// One `[[cores.override]]` entry: `core` (a CPU id) and any per-core keys.
#[derive(Debug, Default)]
pub struct RawOverride {
    pub core: Option<u64>,
    pub executor: RawExecutor,
}

/// `[cores]`: executors, task queues, connection buffers.
#[derive(Debug, Default)]
pub struct RawCoresSection {
    pub placement: Option<RawCores>,
    pub executor: RawExecutor,
    pub shares_sessions: Option<u64>,
    pub shares_background: Option<u64>,
    pub read_buffer_bytes: Option<u64>,
    pub write_buffer_bytes: Option<u64>,
    pub group_commit_window_us: Option<u64>,
    pub overrides: Vec<RawOverride>,
}

#[derive(Debug, Default)]
pub struct RawServer {
    pub hostname: Option<String>,
    pub data_dir: Option<String>,
    pub cores: Option<RawCores>,
    pub timeout_ms_drain: Option<u64>,
    pub cpu_wakeup_us_max: Option<u64>,
    pub io_memory_bytes: Option<u64>,
    pub spin_before_park_us: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawSmtp {
    pub listen: Option<Vec<String>>,
    pub allow_plaintext_auth: Option<bool>,
    pub max_message_bytes: Option<u64>,
    pub max_recipients: Option<u64>,
    pub timeout_ms_command: Option<u64>,
    pub timeout_ms_data: Option<u64>,
    pub connections_per_core_max: Option<u64>,
    pub errors_max: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawSubmission {
    pub listen: Option<Vec<String>>,
    pub listen_tls: Option<Vec<String>>,
    pub allow_plaintext_auth: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RawImap {
    pub listen: Option<Vec<String>>,
    pub listen_tls: Option<Vec<String>>,
    pub allow_plaintext_auth: Option<bool>,
    pub timeout_ms_idle: Option<u64>,
    pub line_bytes_max: Option<u64>,
    pub literal_bytes_max: Option<u64>,
    pub connections_per_core_max: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawPop3 {
    pub listen: Option<Vec<String>>,
    pub listen_tls: Option<Vec<String>>,
    pub allow_plaintext_auth: Option<bool>,
    pub timeout_ms_idle: Option<u64>,
    pub line_bytes_max: Option<u64>,
    pub connections_per_core_max: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawRelay {
    pub port: Option<u64>,
    pub smarthost: Option<String>,
    pub retry: Option<Vec<String>>,
    pub max_age: Option<String>,
    pub delay_notice: Option<String>,
    pub connections_per_domain_max: Option<u64>,
    pub tls_verify_domains: Option<Vec<String>>,
    pub tls_ca_file: Option<String>,
}

/// One `[[tls.sni]]` entry.
#[derive(Debug, Default)]
pub struct RawSni {
    pub names: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub sni: Vec<RawSni>,
}

#[derive(Debug, Default)]
pub struct RawAuth {
    pub failure_delay_ms: Option<u64>,
    pub failures_max: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawDomains {
    pub local: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct RawStore {
    pub fsync: Option<String>,
    pub fsync_wait: Option<String>,
    pub blob_segment_bytes_max: Option<u64>,
    pub meta_segment_bytes_max: Option<u64>,
    pub batch_bytes_max: Option<u64>,
    pub checkpoint_interval_meta_bytes: Option<u64>,
    pub checkpoint_interval_blob_bytes: Option<u64>,
}

/// `[dns]`: the outbound stub resolver.
#[derive(Debug, Default)]
pub struct RawDns {
    pub servers: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub attempts: Option<u64>,
    pub cache_entries_max: Option<u64>,
}

/// `[metrics]`: the Prometheus scrape endpoint.
#[derive(Debug, Default)]
pub struct RawMetrics {
    pub listen: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Known {
    pub server: RawServer,
    pub cores: RawCoresSection,
    pub smtp: RawSmtp,
    pub submission: RawSubmission,
    pub imap: RawImap,
    pub pop3: RawPop3,
    pub tls: RawTls,
    pub relay: RawRelay,
    pub auth: RawAuth,
    pub domains: RawDomains,
    pub store: RawStore,
    pub dns: RawDns,
    pub metrics: RawMetrics,
}

#[derive(Debug, Default)]
pub struct RawConfig {
    pub known: Known,
    /// Wrong types, as `section.key: expected ..., found ...`.
    pub problems: Vec<String>,
    unknown: Vec<String>,
}

/// Takes typed keys out of one section, noting type errors; what is left is unknown.
struct Section<'a> {
    name: &'static str,
    table: Table,
    problems: &'a mut Vec<String>,
}

impl Section<'_> {
    fn wrong(&mut self, key: &str, want: &str, v: &Value) {
        self.problems.push(format!(
            "{}.{key}: expected {want}, found {}",
            self.name,
            v.type_str()
        ));
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.table.remove(key)? {
            Value::String(s) => Some(s),
            v => {
                self.wrong(key, "a string", &v);
                None
            }
        }
    }

    fn uint(&mut self, key: &str) -> Option<u64> {
        match self.table.remove(key)? {
            Value::Integer(i) if i >= 0 => Some(i as u64),
            v => {
                self.wrong(key, "a non-negative integer", &v);
                None
            }
        }
    }

    fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.table.remove(key)? {
            Value::Array(a) if a.iter().all(Value::is_str) => Some(
                a.into_iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            v => {
                self.wrong(key, "a list of strings", &v);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.table.remove(key)? {
            Value::Boolean(b) => Some(b),
            v => {
                self.wrong(key, "true or false", &v);
                None
            }
        }
    }

    /// `[[tls.sni]]`: a list of tables with `names`, `cert` and `key`.
    fn sni(&mut self, key: &str) -> Vec<RawSni> {
        let Some(v) = self.table.remove(key) else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.wrong(key, "a list of tables ([[tls.sni]])", &v);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Value::Table(table) = item else {
                self.wrong(key, "a list of tables ([[tls.sni]])", &item);
                continue;
            };
            let mut entry = Section {
                name: "tls.sni",
                table,
                problems: &mut *self.problems,
            };
            let sni = RawSni {
                names: entry.strings("names"),
                cert: entry.string("cert"),
                key: entry.string("key"),
            };
            for k in entry.table.keys() {
                entry
                    .problems
                    .push(format!("tls.sni[{i}]: unknown key {k:?}"));
            }
            out.push(sni);
        }
        out
    }

    fn executor(&mut self) -> RawExecutor {
        RawExecutor {
            ring_depth: self.uint("ring_depth"),
            io_memory_bytes: self.uint("io_memory_bytes"),
            spin_before_park_us: self.uint("spin_before_park_us"),
            preempt_timer_us: self.uint("preempt_timer_us"),
            connections_max: self.uint("connections_max"),
        }
    }

    /// `[[cores.override]]`: a list of tables with `core` and per-core keys.
    fn overrides(&mut self, key: &str) -> Vec<RawOverride> {
        let Some(v) = self.table.remove(key) else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.wrong(key, "a list of tables ([[cores.override]])", &v);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Value::Table(table) = item else {
                self.wrong(key, "a list of tables ([[cores.override]])", &item);
                continue;
            };
            let mut entry = Section {
                name: "cores.override",
                table,
                problems: &mut *self.problems,
            };
            let o = RawOverride {
                core: entry.uint("core"),
                executor: entry.executor(),
            };
            for k in entry.table.keys() {
                entry.problems.push(format!(
                    "cores.override[{i}]: unknown key {k:?} (per-core keys: ring_depth, \
                     io_memory_bytes, spin_before_park_us, preempt_timer_us, connections_max)"
                ));
            }
            out.push(o);
        }
        out
    }

    fn cores(&mut self, key: &str) -> Option<RawCores> {
        match self.table.remove(key)? {
            Value::String(s) => Some(RawCores::Word(s)),
            Value::Array(a) if a.iter().all(Value::is_integer) => Some(RawCores::List(
                a.into_iter().filter_map(|v| v.as_integer()).collect(),
            )),
            v => {
                self.wrong(key, "\"all\" or a list of CPU ids", &v);
                None
            }
        }
    }

    fn leftovers(self, unknown: &mut Vec<String>) {
        unknown.extend(self.table.keys().map(|k| format!("{}.{k}", self.name)));
    }
}

/// The document being taken apart, section by section.
struct Doc {
    table: Table,
    problems: Vec<String>,
    unknown: Vec<String>,
}

impl Doc {
    /// Reads section `name` (missing: empty) with `read`; its keys `read` did not take are
    /// unknown.
    fn section<T>(&mut self, name: &'static str, read: impl FnOnce(&mut Section<'_>) -> T) -> T {
        let table = match self.table.remove(name) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(v) => {
                self.problems.push(format!(
                    "[{name}]: expected a table, found {}",
                    v.type_str()
                ));
                Table::new()
            }
        };
        let mut s = Section {
            name,
            table,
            problems: &mut self.problems,
        };
        let known = read(&mut s);
        s.leftovers(&mut self.unknown);
        known
    }
}

impl RawConfig {
    /// Parses TOML. Only a syntax error is fatal here.
    pub fn parse(text: &str) -> Result<RawConfig, String> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut doc = Doc {
            table,
            problems: Vec::new(),
            unknown: Vec::new(),
        };
        let known = Known {
            server: doc.section("server", |s| RawServer {
                hostname: s.string("hostname"),
                data_dir: s.string("data_dir"),
                cores: s.cores("cores"),
                timeout_ms_drain: s.uint("timeout_ms_drain"),
                cpu_wakeup_us_max: s.uint("cpu_wakeup_us_max"),
                io_memory_bytes: s.uint("io_memory_bytes"),
                spin_before_park_us: s.uint("spin_before_park_us"),
            }),
            cores: doc.section("cores", |s| RawCoresSection {
                placement: s.cores("placement"),
                executor: s.executor(),
                shares_sessions: s.uint("shares_sessions"),
                shares_background: s.uint("shares_background"),
                read_buffer_bytes: s.uint("read_buffer_bytes"),
                write_buffer_bytes: s.uint("write_buffer_bytes"),
                group_commit_window_us: s.uint("group_commit_window_us"),
                overrides: s.overrides("override"),
            }),
            smtp: doc.section("smtp", |s| RawSmtp {
                listen: s.strings("listen"),
                allow_plaintext_auth: s.boolean("allow_plaintext_auth"),
                max_message_bytes: s.uint("max_message_bytes"),
                max_recipients: s.uint("max_recipients"),
                timeout_ms_command: s.uint("timeout_ms_command"),
                timeout_ms_data: s.uint("timeout_ms_data"),
                connections_per_core_max: s.uint("connections_per_core_max"),
                errors_max: s.uint("errors_max"),
            }),
            submission: doc.section("submission", |s| RawSubmission {
                listen: s.strings("listen"),
                listen_tls: s.strings("listen_tls"),
                allow_plaintext_auth: s.boolean("allow_plaintext_auth"),
            }),
            imap: doc.section("imap", |s| RawImap {
                listen: s.strings("listen"),
                listen_tls: s.strings("listen_tls"),
                allow_plaintext_auth: s.boolean("allow_plaintext_auth"),
                timeout_ms_idle: s.uint("timeout_ms_idle"),
                line_bytes_max: s.uint("line_bytes_max"),
                literal_bytes_max: s.uint("literal_bytes_max"),
                connections_per_core_max: s.uint("connections_per_core_max"),
            }),
            pop3: doc.section("pop3", |s| RawPop3 {
                listen: s.strings("listen"),
                listen_tls: s.strings("listen_tls"),
                allow_plaintext_auth: s.boolean("allow_plaintext_auth"),
                timeout_ms_idle: s.uint("timeout_ms_idle"),
                line_bytes_max: s.uint("line_bytes_max"),
                connections_per_core_max: s.uint("connections_per_core_max"),
            }),
            tls: doc.section("tls", |s| RawTls {
                cert: s.string("cert"),
                key: s.string("key"),
                sni: s.sni("sni"),
            }),
            relay: doc.section("relay", |s| RawRelay {
                port: s.uint("port"),
                smarthost: s.string("smarthost"),
                retry: s.strings("retry"),
                max_age: s.string("max_age"),
                delay_notice: s.string("delay_notice"),
                connections_per_domain_max: s.uint("connections_per_domain_max"),
                tls_verify_domains: s.strings("tls_verify_domains"),
                tls_ca_file: s.string("tls_ca_file"),
            }),
            auth: doc.section("auth", |s| RawAuth {
                failure_delay_ms: s.uint("failure_delay_ms"),
                failures_max: s.uint("failures_max"),
            }),
            domains: doc.section("domains", |s| RawDomains {
                local: s.strings("local"),
            }),
            store: doc.section("store", |s| RawStore {
                fsync: s.string("fsync"),
                fsync_wait: s.string("fsync_wait"),
                blob_segment_bytes_max: s.uint("blob_segment_bytes_max"),
                meta_segment_bytes_max: s.uint("meta_segment_bytes_max"),
                batch_bytes_max: s.uint("batch_bytes_max"),
                checkpoint_interval_meta_bytes: s.uint("checkpoint_interval_meta_bytes"),
                checkpoint_interval_blob_bytes: s.uint("checkpoint_interval_blob_bytes"),
            }),
            dns: doc.section("dns", |s| RawDns {
                servers: s.strings("servers"),
                timeout_ms: s.uint("timeout_ms"),
                attempts: s.uint("attempts"),
                cache_entries_max: s.uint("cache_entries_max"),
            }),
            metrics: doc.section("metrics", |s| RawMetrics {
                listen: s.strings("listen"),
            }),
        };
        let Doc {
            table,
            problems,
            mut unknown,
        } = doc;
        unknown.extend(table.keys().cloned());
        Ok(RawConfig {
            known,
            problems,
            unknown,
        })
    }

    /// `section.key` (or top-level `key`) for every key this version does not know.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.unknown.clone()
    }
}
