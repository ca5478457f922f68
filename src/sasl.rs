//! SASL pieces shared by IMAP AUTHENTICATE, POP3 AUTH and SMTP AUTH: the PLAIN mechanism
//! (RFC 4616), the LOGIN mechanism's two prompts (draft-murchison-sasl-login), their strict
//! base64 (RFC 4648), and why a credential check failed ([`AuthFailure`], which the
//! sans-IO sessions receive from the runtime). Sans-IO.
//!
//! Decoded passwords go straight into an [`accounts::Secret`](crate::accounts::Secret), whose
//! `Debug` and `Display` show `***`.

use crate::accounts::Secret;

/// Longest decoded PLAIN message accepted (authzid + authcid + password + 2 NULs).
pub const PLAIN_BYTES_MAX: usize = 2048;
/// Longest decoded LOGIN user name or password.
pub const LOGIN_BYTES_MAX: usize = 1024;
/// The LOGIN mechanism's first challenge, base64 of `Username:`.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The LOGIN mechanism's second challenge, base64 of `Password:`.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Why a login failed (the client only ever sees "invalid credentials" or a temporary
/// failure). Produced by `runtime::auth`, consumed by the sans-IO sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("invalid credentials")]
    Invalid,
    #[error("the password check could not run")]
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64 at byte {at}")]
    Base64 { at: usize },
    #[error("PLAIN response too long ({bytes} bytes, at most {max})")]
    TooLong { bytes: usize, max: usize },
    #[error("PLAIN response is not authzid NUL authcid NUL password")]
    Malformed,
    #[error(
        "authorization identity {0:?} differs from the login name (proxy login is not supported)"
    )]
    Authzid(String),
}

/// Strict base64 decoding (padding required, no whitespace).
fn base64_decode(input: &[u8]) -> Result<Vec<u8>, SaslError> {
    if !input.len().is_multiple_of(4) {
        return Err(SaslError::Base64 { at: input.len() });
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for (chunk_index, chunk) in input.chunks(4).enumerate() {
        let last = chunk_index == input.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(SaslError::Base64 {
                at: chunk_index * 4 + 4 - pad,
            });
        }
        let mut v: u32 = 0;
        for (i, &b) in chunk[..4 - pad].iter().enumerate() {
            let s = crate::mime::decode::base64_value(b).ok_or(SaslError::Base64 {
                at: chunk_index * 4 + i,
            })?;
            v |= u32::from(s) << (18 - 6 * i);
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Base64 encoding with padding (the server side of PLAIN only decodes: for the tests).
#[cfg(test)]
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes a base64 PLAIN response into (login name, password). An authorization identity
/// is accepted only when empty or equal to the login name.
pub fn decode_plain(base64: &[u8]) -> Result<(String, Secret), SaslError> {
    if base64.len() > PLAIN_BYTES_MAX * 4 / 3 + 4 {
        return Err(SaslError::TooLong {
            bytes: base64.len() * 3 / 4,
            max: PLAIN_BYTES_MAX,
        });
    }
    let raw = base64_decode(base64)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pw), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let authz = std::str::from_utf8(authz).map_err(|_| SaslError::Malformed)?;
    let authc = std::str::from_utf8(authc).map_err(|_| SaslError::Malformed)?;
    let pw = std::str::from_utf8(pw).map_err(|_| SaslError::Malformed)?;
    if authc.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Err(SaslError::Authzid(authz.to_string()));
    }
    Ok((authc.to_string(), Secret::new(pw.to_string())))
}

/// Decodes one base64 response of the LOGIN mechanism (the user name or the password):
/// strict base64 of at most [`LOGIN_BYTES_MAX`] bytes of UTF-8 without NUL. An empty
/// response (`=` on the wire, which the caller maps to `b""`) decodes to "".
pub fn decode_login(base64: &[u8]) -> Result<String, SaslError> {
    if base64.len() > LOGIN_BYTES_MAX.div_ceil(3) * 4 {
        return Err(SaslError::TooLong {
            bytes: base64.len() * 3 / 4,
            max: LOGIN_BYTES_MAX,
        });
    }
    let raw = base64_decode(base64)?;
    if raw.len() > LOGIN_BYTES_MAX {
        return Err(SaslError::TooLong {
            bytes: raw.len(),
            max: LOGIN_BYTES_MAX,
        });
    }
    if raw.contains(&0) {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(raw).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let enc = base64_encode(&data[..n]);
            assert_eq!(base64_decode(enc.as_bytes()).unwrap(), &data[..n], "n={n}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn base64_rejects_bad_input() {
        assert!(base64_decode(b"Zm9").is_err());
        assert!(base64_decode(b"Zm9v YmFy").is_err());
        assert!(base64_decode(b"Z===").is_err());
        assert!(base64_decode(b"Zm==Zm9v").is_err());
        assert!(base64_decode(b"Zm9*").is_err());
    }

    #[test]
    fn plain_decodes_rfc4616_example() {
        // RFC 4616 §4: "\0tim\0tanstaaftanstaaf"
        let (user, pw) = decode_plain(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm").unwrap();
        assert_eq!(user, "tim");
        assert_eq!(pw.expose(), "tanstaaftanstaaf");
        let same = base64_encode(b"tim\0tim\0pw");
        assert_eq!(decode_plain(same.as_bytes()).unwrap().0, "tim");
    }

    #[test]
    fn plain_rejects_proxy_and_malformed() {
        let proxy = base64_encode(b"admin\0tim\0pw");
        assert!(matches!(
            decode_plain(proxy.as_bytes()),
            Err(SaslError::Authzid(_))
        ));
        for bad in [&b"tim\0pw"[..], b"\0\0pw", b"a\0b\0c\0d"] {
            let enc = base64_encode(bad);
            assert!(matches!(
                decode_plain(enc.as_bytes()),
                Err(SaslError::Malformed)
            ));
        }
    }

    #[test]
    fn login_decodes_user_and_password() {
        assert_eq!(decode_login(b"dGlt").unwrap(), "tim");
        assert_eq!(decode_login(b"").unwrap(), "");
        assert_eq!(
            decode_login(LOGIN_USERNAME_CHALLENGE.as_bytes()).unwrap(),
            "Username:"
        );
        assert_eq!(
            decode_login(LOGIN_PASSWORD_CHALLENGE.as_bytes()).unwrap(),
            "Password:"
        );
        let utf8 = base64_encode("pässwörd".as_bytes());
        assert_eq!(decode_login(utf8.as_bytes()).unwrap(), "pässwörd");
    }

    #[test]
    fn login_rejects_bad_base64_nul_non_utf8_and_long() {
        assert!(matches!(
            decode_login(b"dGl"),
            Err(SaslError::Base64 { .. })
        ));
        assert!(matches!(decode_login(b"*"), Err(SaslError::Base64 { .. })));
        let nul = base64_encode(b"a\0b");
        assert_eq!(decode_login(nul.as_bytes()), Err(SaslError::Malformed));
        let latin1 = base64_encode(b"\xe9t\xe9");
        assert_eq!(decode_login(latin1.as_bytes()), Err(SaslError::Malformed));
        let longest = base64_encode(&[b'x'; LOGIN_BYTES_MAX]);
        assert_eq!(
            decode_login(longest.as_bytes()).unwrap().len(),
            LOGIN_BYTES_MAX
        );
        let long = base64_encode(&[b'x'; LOGIN_BYTES_MAX + 1]);
        assert!(matches!(
            decode_login(long.as_bytes()),
            Err(SaslError::TooLong { .. })
        ));
    }
}
