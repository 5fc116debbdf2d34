use super::*;

fn client() -> TunnelConfig {
    let mut c = TunnelConfig::client();
    c.target = "127.0.0.1:29900".into();
    c
}

fn err(c: &TunnelConfig) -> String {
    c.validate().unwrap_err().to_string()
}

#[test]
fn kcptun_defaults_per_role() {
    let c = client().validate().unwrap();
    let s = &c.session;
    assert_eq!(s.crypt, CipherKind::Aes);
    assert_eq!(s.key, "it's a secrect");
    assert_eq!((s.data_shards, s.parity_shards), (10, 3));
    assert_eq!((s.sndwnd, s.rcvwnd), (128, 512));
    assert_eq!(s.mtu, 1350);
    assert_eq!(s.mss(), 1298);
    assert!(s.stream && !s.write_delay && !s.ack_nodelay);
    assert_eq!(s.sockbuf, 4 << 20);
    assert_eq!(c.nodelay, (false, 30, 2, true));
    assert_eq!(
        c.smux,
        SmuxSettings {
            version: 1,
            max_receive_buffer: 4 << 20,
            max_stream_buffer: 2 << 20,
            keep_alive_interval: Duration::from_secs(10),
        }
    );
    let srv = TunnelConfig::server();
    assert_eq!(
        (srv.listen.as_str(), srv.target.as_str()),
        (":29900", "127.0.0.1:12948")
    );
    let s = srv.validate().unwrap().session;
    assert_eq!((s.sndwnd, s.rcvwnd), (1024, 1024));
    let c = TunnelConfig::client();
    assert_eq!(
        (c.listen.as_str(), c.conn, c.scavengettl),
        (":12948", 1, 600)
    );
    assert_eq!(err(&c), "--remote is required");
}

#[test]
fn modes_and_manual() {
    for (mode, p) in [
        ("normal", (false, 40, 2, true)),
        ("fast", (false, 30, 2, true)),
        ("fast2", (true, 20, 2, true)),
        ("fast3", (true, 10, 2, true)),
    ] {
        let c = TunnelConfig {
            mode: mode.into(),
            ..client()
        };
        assert_eq!(c.validate().unwrap().nodelay, p, "{mode}");
    }
    // Presets win over the manual flags, as kcptun applies them last.
    let c = TunnelConfig {
        mode: "fast3".into(),
        nodelay: 0,
        interval: 99,
        ..client()
    };
    assert_eq!(c.validate().unwrap().nodelay, (true, 10, 2, true));
    let c = TunnelConfig {
        mode: "manual".into(),
        nodelay: 1,
        interval: 15,
        resend: 3,
        nc: 0,
        ..client()
    };
    let checked = c.validate().unwrap();
    assert_eq!(checked.nodelay, (true, 15, 3, false));
    assert_eq!(checked.session.nodelay_params(), (true, 15, 3, false));
    let c = TunnelConfig {
        mode: "manual".into(),
        ..client()
    };
    assert_eq!(c.validate().unwrap().nodelay, (false, 50, 0, false));
}

#[test]
fn bad_values_give_one_line_naming_the_flag() {
    let cases: Vec<(TunnelConfig, &str)> = vec![
        (
            TunnelConfig {
                smuxver: 3,
                ..client()
            },
            "--smuxver 3: unsupported smux version (1 or 2)",
        ),
        (
            TunnelConfig {
                crypt: "bogus".into(),
                ..client()
            },
            "--crypt bogus: unknown cipher (",
        ),
        (
            TunnelConfig {
                mode: "turbo".into(),
                ..client()
            },
            "--mode turbo: unknown mode",
        ),
        (
            TunnelConfig {
                datashard: 10,
                parityshard: 0,
                ..client()
            },
            "--datashard 10 --parityshard 0: FEC needs both",
        ),
        (
            TunnelConfig {
                datashard: 0,
                parityshard: 3,
                ..client()
            },
            "--datashard 0 --parityshard 3: FEC needs both",
        ),
        (
            TunnelConfig {
                datashard: 200,
                parityshard: 100,
                ..client()
            },
            "--datashard 200 --parityshard 100: at most 256",
        ),
        (
            TunnelConfig {
                datashard: -1,
                ..client()
            },
            "--datashard -1: must be between 0 and 255",
        ),
        (
            TunnelConfig {
                mtu: 9000,
                ..client()
            },
            "--mtu 9000: must be between 1 and 1500",
        ),
        (
            TunnelConfig {
                mtu: 40,
                ..client()
            },
            "--mtu 40: must be between",
        ),
        (
            TunnelConfig {
                sndwnd: 0,
                ..client()
            },
            "--sndwnd 0: must be between 1 and 65535",
        ),
        (
            TunnelConfig {
                rcvwnd: 70000,
                ..client()
            },
            "--rcvwnd 70000: must be between 1 and 65535",
        ),
        (
            TunnelConfig {
                conn: 0,
                ..client()
            },
            "--conn 0: must be between 1 and 65535",
        ),
        (
            TunnelConfig {
                dscp: 64,
                ..client()
            },
            "--dscp 64: must be between 0 and 63",
        ),
        (
            TunnelConfig {
                keepalive: 0,
                ..client()
            },
            "--keepalive 0: must be between 1 and 30",
        ),
        (
            TunnelConfig {
                keepalive: 31,
                ..client()
            },
            "--keepalive 31: must be between 1 and 30",
        ),
        (
            TunnelConfig {
                streambuf: 8 << 20,
                ..client()
            },
            "--streambuf 8388608: must not be larger than --smuxbuf",
        ),
        (
            TunnelConfig {
                smuxbuf: 0,
                ..client()
            },
            "--smuxbuf 0: must be between",
        ),
        (
            TunnelConfig {
                sockbuf: -5,
                ..client()
            },
            "--sockbuf -5: must be between",
        ),
        (
            TunnelConfig {
                autoexpire: -1,
                ..client()
            },
            "--autoexpire -1: must be between",
        ),
        (
            TunnelConfig {
                mode: "manual".into(),
                interval: 1,
                ..client()
            },
            "--interval 1: must be between 10 and 5000",
        ),
        (
            TunnelConfig {
                mode: "manual".into(),
                nodelay: 2,
                ..client()
            },
            "--nodelay 2: must be between 0 and 1",
        ),
        (
            TunnelConfig {
                snmpperiod: -1,
                ..client()
            },
            "--snmpperiod -1: must be between",
        ),
    ];
    for (cfg, want) in cases {
        let e = err(&cfg);
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    // Server-side: conn and friends are not checked (kcptun's server has no such flags).
    let s = TunnelConfig {
        conn: 0,
        ..TunnelConfig::server()
    };
    assert!(s.validate().is_ok());
}

#[test]
fn every_cipher_name_is_accepted() {
    for kind in CipherKind::ALL {
        let c = TunnelConfig {
            crypt: kind.name().into(),
            ..client()
        };
        assert_eq!(c.validate().unwrap().session.crypt, kind);
    }
}

#[test]
fn json_overrides_and_uses_kcptun_keys() {
    let mut c = TunnelConfig::client();
    c.crypt = "salsa20".into();
    c.apply_json(
        r#"{
        "localaddr": "127.0.0.1:1080", "remoteaddr": "10.0.0.1:4000", "key": "k",
        "crypt": "xor", "mode": "fast2", "conn": 4, "autoexpire": 60, "scavengettl": 30,
        "mtu": 1200, "sndwnd": 256, "rcvwnd": 2048, "datashard": 5, "parityshard": 2,
        "dscp": 46, "nocomp": true, "acknodelay": true, "nodelay": 1, "interval": 20,
        "resend": 2, "nc": 1, "sockbuf": 1048576, "smuxver": 2, "smuxbuf": 8388608,
        "streambuf": 1048576, "keepalive": 5, "snmplog": "./snmp-20060102.log",
        "snmpperiod": 10, "quiet": true, "log": "", "tcp": false, "pprof": false,
        "SomethingElse": 1
    }"#,
    )
    .unwrap();
    let want = TunnelConfig {
        role: Role::Client,
        listen: "127.0.0.1:1080".into(),
        target: "10.0.0.1:4000".into(),
        key: "k".into(),
        crypt: "xor".into(),
        mode: "fast2".into(),
        conn: 4,
        autoexpire: 60,
        scavengettl: 30,
        mtu: 1200,
        sndwnd: 256,
        rcvwnd: 2048,
        datashard: 5,
        parityshard: 2,
        dscp: 46,
        nocomp: true,
        acknodelay: true,
        nodelay: 1,
        interval: 20,
        resend: 2,
        nc: 1,
        sockbuf: 1 << 20,
        smuxver: 2,
        smuxbuf: 8 << 20,
        streambuf: 1 << 20,
        keepalive: 5,
        snmplog: "./snmp-20060102.log".into(),
        snmpperiod: 10,
        quiet: true,
    };
    assert_eq!(c, want);
    want.validate().unwrap();

    // Keys absent from the file keep the command line's values; Go matches keys
    // case-insensitively; the server's address keys are its own.
    let mut s = TunnelConfig::server();
    s.mtu = 1000;
    s.apply_json(r#"{"Listen": ":4000", "TARGET": "127.0.0.1:22", "localaddr": "x"}"#)
        .unwrap();
    assert_eq!(
        (s.listen.as_str(), s.target.as_str(), s.mtu),
        (":4000", "127.0.0.1:22", 1000)
    );
}

#[test]
fn json_errors() {
    let mut c = client();
    for (text, want) in [
        ("[1]", "must be an object"),
        ("{", "not valid JSON"),
        (r#"{"mtu": "big"}"#, "\"mtu\": expected an integer"),
        (r#"{"nocomp": 1}"#, "\"nocomp\": expected true or false"),
        (r#"{"key": 5}"#, "\"key\": expected a string"),
        (r#"{"tcp": true}"#, "raw-TCP emulation is not supported"),
    ] {
        let e = c.apply_json(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    let path = std::path::Path::new("/nonexistent/kcptun.json");
    let e = c.load_json(path).unwrap_err().to_string();
    assert!(
        e.starts_with("configuration file /nonexistent/kcptun.json: "),
        "{e}"
    );
}

#[test]
fn empty_host_means_any_or_local() {
    assert_eq!(normalize_addr(":12948", true), "0.0.0.0:12948");
    assert_eq!(normalize_addr(":12948", false), "127.0.0.1:12948");
    assert_eq!(normalize_addr("[::1]:5", true), "[::1]:5");
}
