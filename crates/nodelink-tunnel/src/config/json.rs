//! kcptun's JSON configuration file (`-c`): its keys are the field names of [`Config`],
//! its values kcptun's (integers for seconds, `0|1` for the manual-mode switches).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{parse_crypt, Config, Profile, Role};
use crate::{Error, ErrorKind};

impl Config {
    /// kcptun's JSON key of the listen address for this role.
    fn listen_key(&self) -> &'static str {
        match self.role {
            Role::Client => "localaddr",
            Role::Server => "listen",
        }
    }

    /// kcptun's JSON key of the target address for this role.
    fn target_key(&self) -> &'static str {
        match self.role {
            Role::Client => "remoteaddr",
            Role::Server => "target",
        }
    }

    /// Reads a kcptun JSON configuration file and applies it ([`Config::apply_json`]).
    ///
    /// # Errors
    ///
    /// An error of kind [`ErrorKind::ConfigFile`] when the file cannot be read or a value
    /// does not fit its setting.
    pub fn load_json(&mut self, path: &Path) -> Result<(), Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::config_file(path.display(), e))?;
        self.apply_json(&text).map_err(|e| match e.kind() {
            ErrorKind::Config => Error::config_file(path.display(), e),
            _ => e,
        })
    }

    /// Applies a kcptun JSON configuration: every key present overrides the current value.
    /// Keys match case-insensitively (as Go's decoder does); keys kcptun has but this tunnel
    /// does not act on (`log`, `pprof`, the other role's addresses) and unknown keys are
    /// ignored with a warning, as kcptun ignores unknown keys. `"tcp": true` is refused
    /// (the raw-TCP emulation is not implemented).
    ///
    /// # Errors
    ///
    /// An error of kind [`ErrorKind::Config`] for text that is not a JSON object or a
    /// value that does not fit its setting (a string for a number, a negative size, an
    /// unknown cipher or mode).
    pub fn apply_json(&mut self, text: &str) -> Result<(), Error> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::config("the JSON configuration must be an object"));
        };
        let (listen_key, target_key) = (self.listen_key(), self.target_key());
        let client = self.role == Role::Client;
        for (raw_key, v) in &map {
            let key = raw_key.to_ascii_lowercase();
            let k = key.as_str();
            if v.is_null() {
                // Go leaves a field unchanged for a JSON null.
                continue;
            }
            match k {
                _ if k == listen_key => self.listen = Some(string(k, v)?),
                _ if k == target_key => self.target = Some(string(k, v)?),
                "key" => self.key = string(k, v)?,
                "crypt" => self.crypt = parsed(k, v, parse_crypt)?,
                "mode" => self.mode = parsed(k, v, str::parse::<Profile>)?,
                "snmplog" => self.snmplog = string(k, v)?,
                "nocomp" => self.nocomp = boolean(k, v)?,
                // ACKs are always prompt here (see the module documentation).
                "acknodelay" => _ = boolean(k, v)?,
                "quiet" => self.quiet = boolean(k, v)?,
                "conn" if client => self.conn = uint(k, v, u16::MAX.into())? as u16,
                "autoexpire" if client => self.autoexpire = secs(k, v)?,
                "scavengettl" if client => self.scavengettl = secs(k, v)?,
                "mtu" => self.mtu = uint(k, v, u16::MAX.into())? as usize,
                "sndwnd" => self.sndwnd = Some(uint(k, v, u16::MAX.into())? as u16),
                "rcvwnd" => self.rcvwnd = Some(uint(k, v, u16::MAX.into())? as u16),
                "datashard" => self.datashard = uint(k, v, u8::MAX.into())? as u8,
                "parityshard" => self.parityshard = uint(k, v, u8::MAX.into())? as u8,
                "dscp" => self.dscp = uint(k, v, u8::MAX.into())? as u8,
                "nodelay" => self.manual.nodelay = switch(k, v)?,
                "interval" => self.manual.interval = uint(k, v, u32::MAX.into())? as u32,
                "resend" => self.manual.resend = uint(k, v, u32::MAX.into())? as u32,
                "nc" => self.manual.nc = switch(k, v)?,
                "sockbuf" => self.sockbuf = uint(k, v, i32::MAX as u64)? as usize,
                "smuxver" => self.smuxver = uint(k, v, u8::MAX.into())? as u8,
                "smuxbuf" => self.smuxbuf = uint(k, v, i32::MAX as u64)? as usize,
                "streambuf" => self.streambuf = uint(k, v, i32::MAX as u64)? as usize,
                "keepalive" => self.keepalive = secs(k, v)?,
                "snmpperiod" => self.snmpperiod = secs(k, v)?,
                "tcp" => {
                    if boolean(k, v)? {
                        return Err(Error::config(
                            "\"tcp\": true: the raw-TCP emulation is not supported",
                        ));
                    }
                }
                "log" => {
                    if !string(k, v)?.is_empty() {
                        tracing::warn!("\"log\" is ignored: logs go to stderr");
                    }
                }
                _ => tracing::warn!(key = %raw_key, "unknown configuration key ignored"),
            }
        }
        Ok(())
    }
}

fn type_error(key: &str, want: &str, v: &Value) -> Error {
    Error::config(format!("\"{key}\": expected {want}, found {v}"))
}

fn string(key: &str, v: &Value) -> Result<String, Error> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_error(key, "a string", v))
}

/// A string parsed by `parse`, whose error is prefixed with the key and the value.
fn parsed<T>(key: &str, v: &Value, parse: impl Fn(&str) -> Result<T, Error>) -> Result<T, Error> {
    let s = string(key, v)?;
    parse(&s).map_err(|e| Error::config(format!("\"{key}\": {s:?}: {e}")))
}

fn boolean(key: &str, v: &Value) -> Result<bool, Error> {
    v.as_bool()
        .ok_or_else(|| type_error(key, "true or false", v))
}

/// An integer from 0 to `max`.
fn uint(key: &str, v: &Value, max: u64) -> Result<u64, Error> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ if v.is_i64() || v.is_u64() => Err(type_error(
            key,
            &format!("an integer between 0 and {max}"),
            v,
        )),
        _ => Err(type_error(key, "an integer", v)),
    }
}

/// kcptun's `0|1` switches.
fn switch(key: &str, v: &Value) -> Result<bool, Error> {
    match v.as_u64() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(type_error(key, "0 or 1", v)),
    }
}

/// Whole seconds.
fn secs(key: &str, v: &Value) -> Result<Duration, Error> {
    uint(key, v, u32::MAX.into()).map(Duration::from_secs)
}
