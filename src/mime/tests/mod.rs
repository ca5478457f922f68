//! Tests of the MIME layer. Expected ENVELOPE/BODY/BODYSTRUCTURE strings,
//! section bytes and SEARCH results were captured from Dovecot 2.3.19.1
//! answering IMAP FETCH/SEARCH for the same messages (or come from RFC 3501's
//! example), so they pin the compatibility imaptest checks.

mod envelope;
mod robust;
mod search;
mod section;
mod structure;
mod units;

use super::{Message, MessageStructure};

/// The text with every line end made CRLF.
pub(super) fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

pub(super) fn bodystructure(msg: &[u8]) -> String {
    let mut out = Vec::new();
    Message::parse(msg).body_structure(msg, true, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn body(msg: &[u8]) -> String {
    let mut out = Vec::new();
    Message::parse(msg).body_structure(msg, false, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn envelope(msg: &[u8]) -> String {
    let mut out = Vec::new();
    Message::parse(msg).envelope(msg, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse(msg: &[u8]) -> MessageStructure {
    Message::parse(msg)
}

/// multipart/mixed: multipart/alternative (QP text, 8bit html), a PDF
/// attachment and an inline image with every extension header.
pub(super) const MIXED_ALTERNATIVE: &str = "Return-Path: <alice@example.org>
From: Alice Example <alice@example.org>
To: Bob <bob@example.com>, \"Carol, C.\" <carol@example.com>
Cc: team: dave@example.net, \"Eve\" <eve@example.net>;
Subject: =?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?= and =?UTF-8?B?w6TDtsO8?=
Date: Tue, 3 Nov 2026 10:15:00 +0100
Message-ID: <20261103101500.1@example.org>
In-Reply-To: <prev@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer-b\"

This is a multi-part message in MIME format.
--outer-b
Content-Type: multipart/alternative;
\tboundary=\"inner-b\"

--inner-b
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello Bob,=0D=0Ahere is the r=C3=A9sum=C3=A9.
Regards
--inner-b
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

<p>Hello Bob, here is the résumé.</p>
--inner-b--

--outer-b
Content-Type: application/pdf; name=\"report.pdf\"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=\"report.pdf\"; size=12
Content-ID: <part3@example.org>
Content-Description: Quarterly report

JVBERi0xLjQKJeLjz9MK
--outer-b
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-Disposition: inline;
 filename*0*=utf-8''%E2%82%AC; filename*1=\".png\"
Content-Language: en, de
Content-Location: http://example.org/euro.png
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

iVBORw0KGgo=
--outer-b--
Epilogue.
";

/// multipart/mixed with a text part and a message/rfc822 attachment whose
/// body is multipart/alternative.
pub(super) const RFC822_ATTACHMENT: &str = "From: forwarder@example.org
To: archive@example.org
Subject: Fwd: the original
Date: Wed, 4 Nov 2026 08:00:00 -0500
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=frontier

--frontier
Content-Type: text/plain

See the attached message.
--frontier
Content-Type: message/rfc822
Content-Disposition: attachment

From: \"Original Sender\" <orig@example.net>
To: undisclosed-recipients:;
Subject: the original
Date: 1 Nov 2026 12:00 +0000
Message-ID: <orig@example.net>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"alt\"

--alt
Content-Type: text/plain; charset=us-ascii

original text
--alt
Content-Type: text/html

<b>original</b>
--alt--

--frontier--
";

/// multipart/digest: a part without Content-Type is message/rfc822.
pub(super) const DIGEST: &str = "From: list@example.org
MIME-Version: 1.0
Content-Type: multipart/digest; boundary=\"d\"

--d

From: one@example.org
Subject: first

first body
--d
Content-Type: text/plain

not a message
--d--
";
