//! Small string helpers: filter templating with escaping and reducing DNs
//! to their first RDN value (for labels).

use ldap3::ldap_escape;

/// Replaces `${account}` and `${dn}` in a filter template with the
/// RFC 4515-escaped values (so `*`, `(`, `)`, `\` and NUL lose their meaning).
pub fn fill_filter(template: &str, account: &str, dn: Option<&str>) -> String {
    let mut out = template.replace("${account}", &ldap_escape(account));
    if let Some(dn) = dn {
        out = out.replace("${dn}", &ldap_escape(dn));
    }
    out
}

/// The value of the first RDN of `dn` if `dn` looks like a DN
/// (`cn=pushers,ou=groups,dc=example,dc=com` -> `pushers`), unescaped per
/// RFC 4514; `None` if it does not look like a DN.
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let dn = dn.trim_start();
    let eq = dn.find('=')?;
    let attr = dn[..eq].trim_end();
    let is_name = attr.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let is_oid = !attr.is_empty()
        && attr.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !attr.starts_with('.')
        && !attr.ends_with('.');
    if !is_name && !is_oid {
        return None;
    }
    let raw = dn[eq + 1..].trim_start();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.as_bytes().iter().copied().peekable();
    while let Some(b) = it.next() {
        match b {
            b'\\' => {
                let c1 = it.next()?;
                if c1.is_ascii_hexdigit() {
                    let c2 = it.next()?;
                    if !c2.is_ascii_hexdigit() {
                        return None;
                    }
                    let hex = [c1, c2];
                    let s = std::str::from_utf8(&hex).ok()?;
                    bytes.push(u8::from_str_radix(s, 16).ok()?);
                } else {
                    bytes.push(c1);
                }
            }
            b',' | b'+' | b';' => {
                break;
            }
            _ => bytes.push(b),
        }
    }
    let value = String::from_utf8(bytes).ok()?;
    // Unescaped trailing spaces before the separator are not part of the value.
    let value = value.trim_end().to_owned();
    if value.is_empty() { None } else { Some(value) }
}

/// A label value from an attribute value: DNs become their first RDN value,
/// anything else stays as it is.
pub fn label_value(value: &str) -> String {
    first_rdn_value(value).unwrap_or_else(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_placeholders_are_escaped() {
        assert_eq!(
            fill_filter("(uid=${account})", "mozart", None),
            "(uid=mozart)"
        );
        assert_eq!(fill_filter("(uid=${account})", "*", None), "(uid=\\2a)");
        assert_eq!(
            fill_filter(
                "(&(uid=${account})(objectClass=person))",
                "mozart)(uid=*",
                None
            ),
            "(&(uid=mozart\\29\\28uid=\\2a)(objectClass=person))"
        );
        assert_eq!(
            fill_filter("(uid=${account})", "a\\b\0", None),
            "(uid=a\\5cb\\00)"
        );
        assert_eq!(
            fill_filter(
                "(|(member=${dn})(memberUid=${account}))",
                "mo*",
                Some("uid=a\\,b,dc=x")
            ),
            "(|(member=uid=a\\5c,b,dc=x)(memberUid=mo\\2a))"
        );
        // Every filled filter parses, whatever the account.
        for account in ["*", ")(", "mozart)(uid=*", "\\", "ä(ö)", "a*b*c"] {
            let f = fill_filter("(&(uid=${account})(objectClass=person))", account, None);
            ldap3::parse_filter(&f).unwrap();
        }
    }

    #[test]
    fn dn_reduced_to_first_rdn_value() {
        assert_eq!(
            first_rdn_value("cn=pushers,ou=groups,dc=example,dc=com").as_deref(),
            Some("pushers")
        );
        assert_eq!(
            first_rdn_value("CN=Domain Users,OU=x").as_deref(),
            Some("Domain Users")
        );
        assert_eq!(
            first_rdn_value("cn = spaced , ou=x").as_deref(),
            Some("spaced")
        );
        assert_eq!(first_rdn_value("cn=a\\,b,ou=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=a\\2Cb,ou=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=caf\\C3\\A9").as_deref(), Some("café"));
        assert_eq!(first_rdn_value("cn=x+uid=y,dc=z").as_deref(), Some("x"));
        assert_eq!(first_rdn_value("2.5.4.3=oid,dc=z").as_deref(), Some("oid"));
        assert_eq!(first_rdn_value("pushers"), None);
        assert_eq!(first_rdn_value("mozart@example.com"), None);
        assert_eq!(first_rdn_value("a b=c"), None);
        assert_eq!(first_rdn_value("cn="), None);
        assert_eq!(first_rdn_value("cn=bad\\"), None);
        assert_eq!(
            label_value("cn=pushers,ou=groups,dc=example,dc=com"),
            "pushers"
        );
        assert_eq!(label_value("pushers"), "pushers");
    }
}
