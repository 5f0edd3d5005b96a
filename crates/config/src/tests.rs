//! Tests of the configuration: defaults, the rendered template, validation.

use super::*;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, Path::new("t.toml"), Path::new("/base"))
}

#[test]
fn empty_is_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.smtp.max_message_size.0, 50 << 20);
    assert_eq!(c.storage.backend, "embedded");
    assert!(c.listen.smtp.is_empty());
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = parse("hostname = \"a.test\"\n\n[smtp]\nmax_recipient = 3\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("line 4"), "{s}");
    assert!(s.contains("max_recipient"), "{s}");
}

#[test]
fn bad_listen_address() {
    let e = parse("[listen]\nsmtp = [\"localhost:25\"]\n").unwrap_err();
    assert!(e.to_string().contains("listen.smtp"), "{e}");
}

#[test]
fn relative_paths_resolve_against_config_dir() {
    let c = parse("data_dir = \"data\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/base/data"));
    assert_eq!(c.tls.cert, "/base/c.pem");
}

#[test]
fn init_template_parses_to_defaults() {
    let t = render_init(&InitValues {
        hostname: "mail.example.test",
        data_dir: Path::new("/srv/p"),
        cert: Path::new("/srv/p/tls/cert.pem"),
        key: Path::new("/srv/p/tls/key.pem"),
        listen_ip: "127.0.0.1",
        port_offset: 10000,
        acme: false,
    });
    let c = parse(&t).unwrap();
    let d = Config::default();
    assert_eq!(c.smtp, d.smtp);
    assert_eq!(c.pop3, d.pop3);
    assert_eq!(c.imap, d.imap);
    assert_eq!(c.auth, d.auth);
    assert_eq!(c.storage, d.storage);
    assert_eq!(c.dav, d.dav);
    assert_eq!(c.delivery, d.delivery);
    assert_eq!(c.relay.host, d.relay.host);
    assert_eq!(c.listen.smtp, vec!["127.0.0.1:10025".to_string()]);
    assert_eq!(c.hostname, "mail.example.test");
}

#[test]
fn networks() {
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    let one: Cidr = "::1".parse().unwrap();
    assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
    assert!(
        parse("[smtp]\nrelay_networks = [\"0.0.0.0/0\"]\n")
            .unwrap_err()
            .to_string()
            .contains("open relay")
    );
    assert!(parse("[smtp]\nrelay_networks = [\"nonsense\"]\n").is_err());
}

#[test]
fn units() {
    let c = parse("[smtp]\nmax_message_size = \"10M\"\ntimeout_command = \"2m\"\n").unwrap();
    assert_eq!(c.smtp.max_message_size.0, 10 << 20);
    assert_eq!(c.smtp.timeout_command.0, 120);
    let c = parse("[smtp]\nmax_message_size = 1234\ntimeout_command = 7\n").unwrap();
    assert_eq!(c.smtp.max_message_size.0, 1234);
    assert_eq!(c.smtp.timeout_command.0, 7);
    assert!(parse("[smtp]\nmax_message_size = \"ten\"\n").is_err());
}

#[test]
fn metadata_limits_keep_what_rfc_5464_asks() {
    let c =
        parse("[imap]\nmetadata_max_value = \"2K\"\nmetadata_admin = \"tel:+1-555\"\n").unwrap();
    assert_eq!(
        (c.imap.metadata_max_value.0, c.imap.metadata_max_entries),
        (2048, 100)
    );
    for bad in ["metadata_max_value = \"1000\"", "metadata_max_entries = 9"] {
        let e = parse(&format!("[imap]\n{bad}\n")).unwrap_err();
        assert!(e.to_string().contains("RFC 5464"), "{e}");
    }
}

#[test]
fn dav_limits_keep_room_for_the_default_collections() {
    let c = parse("[dav]\nmax_resource_size = \"64K\"\nmax_collections = 5\n").unwrap();
    assert_eq!(
        (c.dav.max_resource_size.0, c.dav.max_collections),
        (64 << 10, 5)
    );
    for bad in [
        "max_collections = 1",
        "max_resource_size = \"1K\"",
        "max_instances = 10",
        "max_resources = 0",
    ] {
        assert!(parse(&format!("[dav]\n{bad}\n")).is_err(), "{bad}");
    }
}
