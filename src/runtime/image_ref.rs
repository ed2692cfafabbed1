//! Image references, normalized as Docker and containerd's CRI plugin do:
//! `busybox` is `docker.io/library/busybox:latest`.

/// GOARCH spelling of this machine's architecture, as image platforms use.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The fully qualified form of `image`, or why it is not a valid reference.
pub fn normalize(image: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{image:?} is not a valid image reference: {why}");
    if image.is_empty() {
        return Err(bad("empty"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("digest must be sha256:<hex>"))?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(bad(
                    "digest must be sha256 followed by 64 lower-case hex digits",
                ));
            }
            (n, Some(d))
        }
        None => (image, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.as_bytes()[0] != b'.'
            && t.as_bytes()[0] != b'-'
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(bad("invalid tag"));
        }
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    let domain = if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts.remove(0).to_string()
    } else {
        "docker.io".to_string()
    };
    if domain == "docker.io" && parts.len() == 1 {
        parts.insert(0, "library");
    }
    for p in &parts {
        let ok = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(bad(
                "repository names are lower-case letters, digits and separators",
            ));
        }
    }
    let mut out = format!("{domain}/{}", parts.join("/"));
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// The kubelet's default pull policy: `Always` for `:latest` or untagged
/// images, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let tagged = image[slash..].contains(':') || image.contains('@');
    if !tagged || image.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("reg.example:5000/team/app:2", "reg.example:5000/team/app:2"),
            (
                "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io/library/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        for bad in ["", "Busybox", "a:", "a:-x", "a@sha256:12", "a//b", "a:b:c"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("reg:5000/busybox"), "Always");
    }
}
