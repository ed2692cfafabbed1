//! The string rules of Kubernetes names and values, as
//! k8s.io/apimachinery/pkg/util/validation defines them (IsQualifiedName,
//! IsValidLabelValue, IsValidPortName, IsRelaxedEnvVarName,
//! IsConfigMapKey), plus the NFS server rule this agent adds. Each returns
//! what is wrong, in words close to the API server's.

/// RFC 1123 label: what Kubernetes requires of container, volume, port and
/// namespace names.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?} is longer than 63 characters"));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(format!(
            "{s:?} must consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: what Kubernetes requires of pod and node names.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    for part in s.split('.') {
        check_label(part).map_err(|_| {
            format!(
                "{s:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
            )
        })?;
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: the name part of a label
/// key, and a non-empty label value.
fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// A qualified name: `[prefix/]name`, the prefix a DNS subdomain, the name
/// at most 63 characters of [A-Za-z0-9-_.] starting and ending
/// alphanumeric. Label keys, annotation keys and resource names.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        None => (None, s),
        Some((_, n)) if n.contains('/') => {
            return Err(format!(
                "Invalid value: {s:?}: a qualified name is a name with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
        }
        Some((p, n)) => (Some(p), n),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!(
                "Invalid value: {s:?}: prefix part must be non-empty"
            ));
        }
        if let Err(m) = check_subdomain(p) {
            return Err(format!("Invalid value: {s:?}: prefix part {m}"));
        }
    }
    if name.is_empty() {
        return Err(format!("Invalid value: {s:?}: name part must be non-empty"));
    }
    if name.len() > 63 {
        return Err(format!(
            "Invalid value: {s:?}: name part must be no more than 63 characters"
        ));
    }
    if !label_chars(name) {
        return Err(format!("Invalid value: {s:?}: {NAME_PART}"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of [A-Za-z0-9-_.]
/// starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 63 characters"
        ));
    }
    if !s.is_empty() && !label_chars(s) {
        return Err(format!(
            "Invalid value: {s:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// IANA_SVC_NAME (RFC 6335): at most 15 characters of [a-z0-9-], at least
/// one letter, no leading, trailing or doubled hyphen.
pub fn port_name(s: &str) -> Result<(), String> {
    let why = if s.is_empty() || s.len() > 15 {
        "must be no more than 15 characters"
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    } else if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter (a-z)"
    } else if s.contains("--") {
        "must not contain consecutive hyphens"
    } else if s.starts_with('-') || s.ends_with('-') {
        "must not begin or end with a hyphen"
    } else {
        return Ok(());
    };
    Err(format!("Invalid value: {s:?}: {why}"))
}

/// An environment variable name (and an `envFrom` prefix). Kubernetes
/// accepts any printable ASCII character but '=' since 1.30
/// (RelaxedEnvironmentVariableValidation, on by default since 1.32, GA in
/// 1.34); what the shell or the program makes of such names is theirs.
pub fn env_var_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("Required value".into());
    }
    if !s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
        return Err(format!(
            "Invalid value: {s:?}: a valid environment variable name must consist only of printable ASCII characters other than '='"
        ));
    }
    Ok(())
}

/// A ConfigMap or Secret key: at most 253 characters of [-._a-zA-Z0-9],
/// not `.`, `..` or starting with `..` (it becomes a file name).
pub fn config_map_key(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("Required value".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 253 characters"
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "Invalid value: {s:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        ));
    }
    if s == "." || s.starts_with("..") {
        return Err(format!(
            "Invalid value: {s:?}: must not be '.' or '..' or start with '..'"
        ));
    }
    Ok(())
}

/// An NFS server: a host name, an IPv4 address or an IPv6 address in
/// brackets. Stricter than the API server (which only requires a value):
/// the agent passes `server:path` to mount(8), where a leading '-' would
/// read as an option, a space would split the argument, and a bare IPv6
/// address's ':' would cut the path in the wrong place.
pub fn nfs_server(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("Required value".into());
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("Invalid value: {s:?}: not an IPv6 address in brackets"));
    }
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "Invalid value: {s:?}: write an IPv6 address in brackets ([{s}])"
        ));
    }
    // Host names are case-insensitive: check the lower-cased form.
    let lower = s.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if check_subdomain(host).is_err() {
        return Err(format!(
            "Invalid value: {s:?}: must be a host name, an IPv4 address or an IPv6 address in brackets"
        ));
    }
    Ok(())
}

/// A DNS-1123 label (container, volume and port names, hostname,
/// subdomain), in the API server's words.
pub fn dns_label(s: &str) -> Result<(), String> {
    check_label(s).map_err(|m| format!("Invalid value: {s:?}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        for ok in ["app", "example.com/App_1", "a", "k8s.io/x.y-z", "A1"] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a_",
            "Example.com/a",
            &"a".repeat(64),
            "x/has space",
        ] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_port_names_env_names_keys() {
        assert!(label_value("").is_ok() && label_value("a.B-c_1").is_ok());
        assert!(label_value("-a").is_err() && label_value(&"a".repeat(64)).is_err());
        for ok in ["http", "h2c", "web-1", "a"] {
            assert!(port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "8080",
            "HTTP",
            "a--b",
            "-a",
            "a-",
            "sixteen-chars-xx",
            "a_b",
        ] {
            assert!(port_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["PATH", "my.var-1", "1X", "with space"] {
            assert!(env_var_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A=B", "tab\t", "é"] {
            assert!(env_var_name(bad).is_err(), "{bad:?}");
        }
        assert!(config_map_key("a.conf").is_ok());
        for bad in ["", ".", "..", "..a", "a/b", &"a".repeat(254)] {
            assert!(config_map_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nfs_servers() {
        for ok in [
            "nfs",
            "NFS.example.com",
            "192.168.1.10",
            "[fe80::1]",
            "nas.",
        ] {
            assert!(nfs_server(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-o", "a b", "fe80::1", "[zz]", "host:/x", "a,b", "server\n",
        ] {
            assert!(nfs_server(bad).is_err(), "{bad:?}");
        }
    }
}
