use super::*;

fn get<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn base64_round_trips() {
    for s in ["", "a", "ab", "abc", "user:pa:ss", "ünïcode"] {
        let e = base64_encode(s.as_bytes());
        assert_eq!(base64_decode(&e).as_deref(), Some(s.as_bytes()), "{s}");
    }
    assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    assert_eq!(base64_decode("not base64!"), None);
}

#[test]
fn bearer_server_checks_scheme_header_and_tokens() {
    let cfg = BearerTokenConfig {
        tokens: vec!["tokA".into(), "tokB".into()],
        ..Default::default()
    };
    let auth = ServerAuth::build(&AuthConfig::Bearer(cfg)).expect("build");
    let ok = auth
        .check(&get(&[("authorization", "Bearer tokB")]))
        .expect("valid");
    assert_eq!((ok.method, &*ok.subject), ("bearertokenauth", "tokB"));
    assert_eq!(
        auth.check(&get(&[])).unwrap_err(),
        "missing Authorization header"
    );
    assert_eq!(
        auth.check(&get(&[("authorization", "Bearer nope")]))
            .unwrap_err(),
        "invalid token"
    );
    assert_eq!(
        auth.check(&get(&[("authorization", "Bearer ")]))
            .unwrap_err(),
        "invalid token"
    );
    assert!(auth
        .check(&get(&[("authorization", "Basic tokA")]))
        .unwrap_err()
        .contains("not a Bearer token"));

    let custom = BearerTokenConfig {
        token: "t1".into(),
        scheme: String::new(),
        header: "X-Api-Key".into(),
        ..Default::default()
    };
    let auth = ServerAuth::build(&AuthConfig::Bearer(custom)).expect("build");
    assert!(auth.check(&get(&[("x-api-key", "t1")])).is_ok());
}

#[test]
fn bearer_token_file_is_reread_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("weir-bearer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("token");
    std::fs::write(&f, "first\n").expect("write");
    let cfg = BearerTokenConfig {
        filename: f.display().to_string(),
        ..Default::default()
    };
    assert!(cfg.validate().is_empty());
    let tokens = Tokens::new(&cfg);
    assert!(tokens.valid("first"));
    std::fs::write(&f, "second\n").expect("write");
    // The file is looked at again at most once a second, and when its mtime moved.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tokens.valid("second") {
        assert!(Instant::now() < deadline, "the new token was never read");
        let _ = filetime_bump(&f);
    }
    assert!(!tokens.valid("first"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Moves the file's mtime forward (coarse filesystem clocks may not see a quick rewrite).
fn filetime_bump(f: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::options().append(true).open(f)?;
    file.set_modified(SystemTime::now() + Duration::from_secs(2))
}

#[test]
fn basic_server_with_bcrypt_sha_and_plain_users() {
    let bcrypt_hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let inline = format!(
        "alice:{bcrypt_hash}\nbob:{{SHA}}{}\ncarol:plainpw\n# comment\n",
        {
            use sha1::Digest;
            base64_encode(&sha1::Sha1::digest(b"hunter2"))
        }
    );
    let cfg = BasicAuthConfig {
        htpasswd: Some(Htpasswd {
            file: String::new(),
            inline,
        }),
        client_auth: None,
    };
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let auth = ServerAuth::build(&AuthConfig::Basic(cfg)).expect("build");
    for (user, pass, ok) in [
        ("alice", "s3cret", true),
        ("alice", "wrong", false),
        ("bob", "hunter2", true),
        ("bob", "hunter3", false),
        ("carol", "plainpw", true),
        ("mallory", "plainpw", false),
    ] {
        let h = format!(
            "Basic {}",
            base64_encode(format!("{user}:{pass}").as_bytes())
        );
        let r = auth.check(&get(&[("authorization", h.as_str())]));
        assert_eq!(r.is_ok(), ok, "{user}:{pass} -> {r:?}");
        if ok {
            assert_eq!(&*r.expect("ok").subject, user);
        }
    }
    assert_eq!(
        auth.check(&get(&[("authorization", "Basic %%%")]))
            .unwrap_err(),
        "malformed Basic credentials"
    );
    let md5 = BasicAuthConfig {
        htpasswd: Some(Htpasswd {
            file: String::new(),
            inline: "dave:$apr1$abc$def".into(),
        }),
        client_auth: None,
    };
    assert!(md5.validate()[0].1.contains("bcrypt"));
}

#[test]
fn clients_add_their_headers() {
    let ctx = Context {
        receiver: Arc::from("otlp"),
        transport: "http",
        metadata: Some(Arc::new(vec![("x-scope-orgid".into(), "team-a".into())])),
        tenant: None,
        auth: None,
        charge: None,
        ack: None,
    };
    let mut h = http::HeaderMap::new();
    let bearer = ClientAuth::build(&AuthConfig::Bearer(BearerTokenConfig {
        token: "abc".into(),
        ..Default::default()
    }))
    .expect("build");
    bearer.apply(&ctx, &mut h);
    assert_eq!(h["authorization"], "Bearer abc");

    let basic = ClientAuth::build(&AuthConfig::Basic(BasicAuthConfig {
        htpasswd: None,
        client_auth: Some(ClientCredentials {
            username: "user".into(),
            password: "pass".into(),
        }),
    }))
    .expect("build");
    basic.apply(&ctx, &mut h);
    assert_eq!(h["authorization"], "Basic dXNlcjpwYXNz");

    let setter = HeadersSetterConfig {
        headers: vec![
            HeaderSetting {
                key: "X-Scope-OrgID".into(),
                from_context: Some("X-Scope-OrgID".into()),
                ..Default::default()
            },
            HeaderSetting {
                key: "X-Missing".into(),
                from_context: Some("x-nothing".into()),
                default_value: Some("fallback".into()),
                ..Default::default()
            },
            HeaderSetting {
                key: "Authorization".into(),
                action: HeaderAction::Delete,
                ..Default::default()
            },
            HeaderSetting {
                key: "X-Fixed".into(),
                value: Some("v".into()),
                action: HeaderAction::Update,
                ..Default::default()
            },
        ],
    };
    assert!(setter.validate().is_empty(), "{:?}", setter.validate());
    ClientAuth::build(&AuthConfig::HeadersSetter(setter))
        .expect("build")
        .apply(&ctx, &mut h);
    assert_eq!(h["x-scope-orgid"], "team-a");
    assert_eq!(h["x-missing"], "fallback");
    assert!(!h.contains_key("authorization"));
    assert!(
        !h.contains_key("x-fixed"),
        "update of an absent header does nothing"
    );

    let bad = HeadersSetterConfig {
        headers: vec![HeaderSetting {
            key: "X".into(),
            ..Default::default()
        }],
    };
    assert!(bad.validate()[0]
        .1
        .contains("exactly one of value and from_context"));
}
