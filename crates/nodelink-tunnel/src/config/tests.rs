use super::*;

fn client() -> Config {
    Config::default().with_target("127.0.0.1:29900")
}

fn err(c: &Config) -> String {
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
    assert!(s.stream && !s.write_delay);
    assert_eq!(s.acks, nodelink_kcp::AckTiming::Prompt);
    assert_eq!(s.sockbuf, 4 << 20);
    assert_eq!(c.nodelay, (false, 30, 2, true));
    assert_eq!(
        (c.listen.as_str(), c.target.as_str()),
        (":12948", "127.0.0.1:29900")
    );
    assert_eq!(
        c.smux,
        SmuxSettings {
            version: 1,
            max_receive_buffer: 4 << 20,
            max_stream_buffer: 2 << 20,
            keep_alive_interval: Duration::from_secs(10),
        }
    );
    let srv = Config::server().validate().unwrap();
    assert_eq!(
        (srv.listen.as_str(), srv.target.as_str()),
        (":29900", "127.0.0.1:12948")
    );
    assert_eq!((srv.session.sndwnd, srv.session.rcvwnd), (1024, 1024));
    // A window set explicitly wins over the role's default, the other keeps it.
    let srv = Config::server().with_rcvwnd(64).validate().unwrap();
    assert_eq!((srv.session.sndwnd, srv.session.rcvwnd), (1024, 64));
    let c = Config::default();
    assert_eq!(
        (c.listen_addr(), c.conn, c.scavengettl),
        (":12948", 1, Duration::from_secs(600))
    );
    assert_eq!(err(&c), "--remote is required");
    assert_eq!(
        err(&Config::server().with_target(" ")),
        "--target is required"
    );
}

#[test]
fn modes_and_manual() {
    for (mode, p) in [
        ("normal", (false, 40, 2, true)),
        ("fast", (false, 30, 2, true)),
        ("fast2", (true, 20, 2, true)),
        ("fast3", (true, 10, 2, true)),
    ] {
        let profile: Profile = mode.parse().unwrap();
        assert_eq!(profile.to_string(), mode);
        let c = client().with_mode(profile);
        assert_eq!(c.validate().unwrap().nodelay, p, "{mode}");
    }
    // Presets win over the manual settings, as kcptun applies them last.
    let manual = Manual {
        nodelay: false,
        interval: 99,
        ..Manual::default()
    };
    let c = client()
        .with_mode(Profile::Preset(Mode::Fast3))
        .with_manual(manual);
    assert_eq!(c.validate().unwrap().nodelay, (true, 10, 2, true));
    let manual = Manual {
        nodelay: true,
        interval: 15,
        resend: 3,
        nc: false,
    };
    let checked = client()
        .with_mode(Profile::Manual)
        .with_manual(manual)
        .validate()
        .unwrap();
    assert_eq!(checked.nodelay, (true, 15, 3, false));
    assert_eq!(checked.session.nodelay_params(), (true, 15, 3, false));
    let c = client().with_mode("manual".parse().unwrap());
    assert_eq!(c.validate().unwrap().nodelay, (false, 50, 0, false));
    assert_eq!(
        "turbo".parse::<Profile>().unwrap_err().to_string(),
        "unknown mode (normal, fast, fast2, fast3, manual)"
    );
}

#[test]
fn bad_values_give_one_line_naming_the_flag() {
    let manual = |m: Manual| client().with_mode(Profile::Manual).with_manual(m);
    let cases: Vec<(Config, &str)> = vec![
        (
            client().with_smuxver(3),
            "--smuxver 3: unsupported smux version (1 or 2)",
        ),
        (
            client().with_datashard(10).with_parityshard(0),
            "--datashard 10 --parityshard 0: FEC needs both",
        ),
        (
            client().with_datashard(0).with_parityshard(3),
            "--datashard 0 --parityshard 3: FEC needs both",
        ),
        (
            client().with_datashard(200).with_parityshard(100),
            "--datashard 200 --parityshard 100: at most 256",
        ),
        (
            client().with_mtu(9000),
            "--mtu 9000: must be between 1 and 1500",
        ),
        (client().with_mtu(40), "--mtu 40: must be between"),
        (
            client().with_sndwnd(0),
            "--sndwnd 0: must be between 1 and 65535",
        ),
        (
            client().with_rcvwnd(0),
            "--rcvwnd 0: must be between 1 and 65535",
        ),
        (
            client().with_conn(0),
            "--conn 0: must be between 1 and 65535",
        ),
        (
            client().with_dscp(64),
            "--dscp 64: must be between 0 and 63",
        ),
        (
            client().with_keepalive(Duration::ZERO),
            "--keepalive 0: must be between 1 and 30",
        ),
        (
            client().with_keepalive(Duration::from_secs(31)),
            "--keepalive 31: must be between 1 and 30",
        ),
        (
            client().with_keepalive(Duration::from_millis(500)),
            "--keepalive 500ms: must be between 1 and 30",
        ),
        (
            client().with_streambuf(8 << 20),
            "--streambuf 8388608: must not be larger than --smuxbuf",
        ),
        (client().with_smuxbuf(0), "--smuxbuf 0: must be between"),
        (
            client().with_sockbuf(1 << 31),
            "--sockbuf 2147483648: must be between",
        ),
        (
            manual(Manual {
                interval: 1,
                ..Manual::default()
            }),
            "--interval 1: must be between 10 and 5000",
        ),
        (
            manual(Manual {
                resend: 256,
                ..Manual::default()
            }),
            "--resend 256: must be between 0 and 255",
        ),
        (client().with_listen(""), "--listen: an address is required"),
        (
            client().with_autoexpire(Duration::MAX),
            "--autoexpire 18446744073709551615.999999999s: must be between 0 and 4294967295",
        ),
        (
            Config::server().with_snmpperiod(Duration::from_secs(1 << 40)),
            "--snmpperiod 1099511627776: must be between 0 and 4294967295",
        ),
    ];
    for (cfg, want) in cases {
        let e = err(&cfg);
        assert!(e.starts_with(want), "got {e:?}, want {want:?}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    // Server-side: conn is not checked (kcptun's server has no such flag).
    assert!(Config::server().with_conn(0).validate().is_ok());
    // The manual settings are only checked in manual mode.
    let unused = Manual {
        interval: 1,
        ..Manual::default()
    };
    assert!(client().with_manual(unused).validate().is_ok());
}

#[test]
fn every_cipher_name_is_accepted() {
    for kind in CipherKind::ALL {
        assert_eq!(parse_crypt(kind.name()).unwrap(), kind);
        let c = client().with_crypt(kind);
        assert_eq!(c.validate().unwrap().session.crypt, kind);
    }
    let e = parse_crypt("bogus").unwrap_err().to_string();
    assert!(e.starts_with("unknown cipher (aes, "), "{e}");
}

#[test]
fn json_overrides_and_uses_kcptun_keys() {
    let mut c = Config::default().with_crypt(CipherKind::Salsa20);
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
    let want = Config::default()
        .with_listen("127.0.0.1:1080")
        .with_target("10.0.0.1:4000")
        .with_key("k")
        .with_crypt(CipherKind::Xor)
        .with_mode(Profile::Preset(Mode::Fast2))
        .with_manual(Manual {
            nodelay: true,
            interval: 20,
            resend: 2,
            nc: true,
        })
        .with_conn(4)
        .with_autoexpire(Duration::from_secs(60))
        .with_scavengettl(Duration::from_secs(30))
        .with_mtu(1200)
        .with_sndwnd(256)
        .with_rcvwnd(2048)
        .with_datashard(5)
        .with_parityshard(2)
        .with_dscp(46)
        .with_nocomp(true)
        .with_sockbuf(1 << 20)
        .with_smuxver(2)
        .with_smuxbuf(8 << 20)
        .with_streambuf(1 << 20)
        .with_keepalive(Duration::from_secs(5))
        .with_snmplog("./snmp-20060102.log")
        .with_snmpperiod(Duration::from_secs(10))
        .with_quiet(true);
    assert_eq!(c, want);
    want.validate().unwrap();

    // Keys absent from the file keep the values set before; Go matches keys
    // case-insensitively; the server's address keys are its own.
    let mut s = Config::server().with_mtu(1000);
    s.apply_json(r#"{"Listen": ":4000", "TARGET": "127.0.0.1:22", "localaddr": "x"}"#)
        .unwrap();
    assert_eq!(
        (s.listen_addr(), s.target_addr(), s.mtu),
        (":4000", Some("127.0.0.1:22"), 1000)
    );
}

#[test]
fn json_errors() {
    let mut c = client();
    for (text, want) in [
        ("[1]", "must be an object"),
        ("{", "not valid JSON"),
        (
            r#"{"mtu": "big"}"#,
            "\"mtu\": expected an integer, found \"big\"",
        ),
        (
            r#"{"mtu": -5}"#,
            "\"mtu\": expected an integer between 0 and 65535, found -5",
        ),
        (
            r#"{"datashard": 300}"#,
            "\"datashard\": expected an integer between 0 and 255, found 300",
        ),
        (r#"{"nodelay": 2}"#, "\"nodelay\": expected 0 or 1, found 2"),
        (r#"{"nocomp": 1}"#, "\"nocomp\": expected true or false"),
        (r#"{"key": 5}"#, "\"key\": expected a string"),
        (
            r#"{"mode": "turbo"}"#,
            "\"mode\": \"turbo\": unknown mode (",
        ),
        (
            r#"{"crypt": "rot13"}"#,
            "\"crypt\": \"rot13\": unknown cipher (",
        ),
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
