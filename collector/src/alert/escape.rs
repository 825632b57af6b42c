//! Untrusted text in messages. Everything a terminal reports (its id, labels such as merchant,
//! region and model, versions, target names, error details) may be written by whoever holds the
//! terminal and its token, so it is rendered inert before it reaches an operations chat or a
//! mailbox: one function per target syntax, each of which
//!
//! - drops control characters (newlines that would forge a new message line, tabs, escapes)
//!   and the invisible format characters (zero-width, bidirectional overrides) that disguise
//!   text;
//! - defangs URLs and host names: `https://evil.example` becomes `hxxps[:]//evil[.]example`,
//!   the notation security teams already read, so the value stays legible but no client
//!   auto-links it (a zero-width joiner would also stop auto-linking, but some clients strip
//!   it and copy-paste restores the live link);
//! - neutralises mentions: `@` becomes the full-width `＠`, so `@all`, `@所有人` and
//!   `@13800000000` notify nobody;
//! - for markdown, replaces the characters that open links, images, HTML tags (`<a href>`,
//!   `<font>`, Feishu's `<at id=all>`), code spans and emphasis with full-width look-alikes,
//!   because backslash escapes are not honoured the same way by DingTalk, WeCom and Feishu;
//! - bounds the length of each value ([`VALUE_MAX_CHARS`]), ending a cut value with `…`.
//!
//! Only posmon's own text (finding titles, remediation, the configured dashboard link) is left
//! active. Pure: no IO.

/// The most characters of one untrusted value a message shows.
pub const VALUE_MAX_CHARS: usize = 200;
/// Alertmanager label values are bounded tighter: they become series-like identities.
pub const LABEL_MAX_CHARS: usize = 128;
/// Alertmanager annotations (the evidence) may be longer.
pub const ANNOTATION_MAX_CHARS: usize = 1024;

/// The syntaxes untrusted text is escaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DingTalk robot markdown.
    DingTalk,
    /// WeCom robot markdown.
    WeCom,
    /// Feishu card markdown (lark_md).
    Feishu,
    /// A plain-text mail body (and subject).
    Email,
    /// The `text` and `title` renditions inside the signed JSON webhook (its structured fields
    /// stay raw): generic markdown, since receivers often forward it to a chat.
    Webhook,
}

impl Format {
    /// Escapes one untrusted value for this format.
    pub fn value(self, text: &str) -> String {
        match self {
            Format::DingTalk => dingtalk_markdown(text),
            Format::WeCom => wecom_markdown(text),
            Format::Feishu => feishu_markdown(text),
            Format::Email => email_text(text),
            Format::Webhook => markdown_text(text, VALUE_MAX_CHARS),
        }
    }
}

/// An untrusted value inside a DingTalk markdown message.
pub fn dingtalk_markdown(text: &str) -> String {
    markdown_text(text, VALUE_MAX_CHARS)
}

/// An untrusted value inside a WeCom markdown message (which also renders `<font>` tags).
pub fn wecom_markdown(text: &str) -> String {
    markdown_text(text, VALUE_MAX_CHARS)
}

/// An untrusted value inside a Feishu card's markdown (lark_md: `<at id=all>`, `<font>`, links).
pub fn feishu_markdown(text: &str) -> String {
    markdown_text(text, VALUE_MAX_CHARS)
}

/// An untrusted value in a plain-text mail (posmon sends `text/plain`): no control characters
/// (no forged header or line), defanged links (mail clients auto-link plain text too), no
/// mention, and no `<` `>` either, so the text stays inert should a client guess HTML.
/// Markdown characters stay: nothing renders them.
pub fn email_text(text: &str) -> String {
    let plain = plain(text, VALUE_MAX_CHARS);
    defang(&plain)
        .replace('@', "＠")
        .replace('<', "‹")
        .replace('>', "›")
}

/// An Alertmanager label value: plain (no control or invisible characters) and bounded. Not
/// defanged: routes and silences in Alertmanager match these values.
pub fn alertmanager_label(text: &str) -> String {
    plain(text, LABEL_MAX_CHARS)
}

/// An Alertmanager annotation built from untrusted text: plain, bounded, defanged (its
/// templates often post annotations to chats).
pub fn alertmanager_annotation(text: &str) -> String {
    defang(&plain(text, ANNOTATION_MAX_CHARS))
}

/// Markdown-inert text: plain, defanged, the active characters replaced by look-alikes.
pub fn markdown_text(text: &str, max_chars: usize) -> String {
    let defanged = defang(&plain(text, max_chars));
    let mut out = String::with_capacity(defanged.len());
    for c in defanged.chars() {
        match c {
            '@' => out.push('＠'),
            '<' => out.push('‹'),
            '>' => out.push('›'),
            '(' => out.push('（'),
            ')' => out.push('）'),
            // `[.]` and `[:]` from defanging stay; any other bracket could start a link.
            '[' => out.push('［'),
            ']' => out.push('］'),
            '`' => out.push('ˋ'),
            '*' => out.push('∗'),
            '#' => out.push('＃'),
            '|' => out.push('｜'),
            '!' => out.push('！'),
            '&' => out.push('＆'),
            '\\' => out.push('＼'),
            '~' => out.push('～'),
            other => out.push(other),
        }
    }
    // Defanging's own brackets are put back: they cannot form a link (a `]` of `[.]` is never
    // followed by `(`, which was replaced above).
    out.replace("［.］", "[.]").replace("［:］", "[:]")
}

/// No control characters (a newline or tab becomes a space), no invisible format characters,
/// runs of spaces collapsed, trimmed, at most `max_chars` characters.
pub fn plain(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0usize;
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || is_line_separator(c) {
            ' '
        } else if is_invisible(c) {
            continue;
        } else {
            c
        };
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if count == max_chars {
            // One character more than allowed: cut and mark.
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{0085}')
}

/// Zero-width, joiner, bidirectional and other format characters that change how text reads
/// without showing.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Defangs URLs and host names: `scheme://` → `scheme[:]//` (`http` → `hxxp`), and a dot
/// between a letter or digit and a label of two or more letters → `[.]` (`evil.example`,
/// `www.evil.com`, `user@evil.com`), so versions such as `1.2.3` stay as they are. Full-width
/// and ideographic dots, which some clients accept in links, count as dots.
pub fn defang(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c == ':' && chars.get(index + 1) == Some(&'/') && chars.get(index + 2) == Some(&'/') {
            out.push_str("[:]//");
            index += 3;
            continue;
        }
        if matches!(c, 'h' | 'H') && starts_with_ignore_case(&chars[index..], "http") {
            let rest = &chars[index + 4..];
            let scheme_end = if rest.first().is_some_and(|c| matches!(c, 's' | 'S')) {
                1
            } else {
                0
            };
            let after = &rest[scheme_end..];
            if after.first() == Some(&':') {
                out.push(c);
                out.push_str("xx");
                out.push(chars[index + 3]);
                index += 4;
                continue;
            }
        }
        if matches!(c, '.' | '．' | '。' | '｡') {
            let before = index
                .checked_sub(1)
                .and_then(|previous| chars.get(previous))
                .is_some_and(|previous| previous.is_alphanumeric());
            let label: usize = chars[index + 1..]
                .iter()
                .take_while(|next| next.is_alphabetic())
                .count();
            let label_ends = chars
                .get(index + 1 + label)
                .is_none_or(|next| !next.is_alphanumeric());
            if before && label >= 2 && label_ends {
                out.push_str("[.]");
                index += 1;
                continue;
            }
        }
        out.push(c);
        index += 1;
    }
    out
}

fn starts_with_ignore_case(chars: &[char], prefix: &str) -> bool {
    let mut count = 0;
    for (expected, actual) in prefix.chars().zip(chars) {
        if !actual.eq_ignore_ascii_case(&expected) {
            return false;
        }
        count += 1;
    }
    count == prefix.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile payloads; each is checked in every format for what must never survive.
    pub const HOSTILE: &[&str] = &[
        "[Call support](https://evil.example)",
        "https://evil.example/pay",
        "visit www.evil.example now",
        "<a href=\"https://evil.example\">click</a>",
        "![img](http://evil.example/x.png)",
        "# Heading\n## forged",
        "@all please call 400",
        "@所有人 请拨打客服",
        "<at id=all></at>",
        "<font color=\"warning\">urgent</font>",
        "ok\n- **T-9999** · [dashboard](https://evil.example)",
        "line\r\nbreak\u{2028}sep",
        "evil\u{200B}.example and ev\u{202E}il",
        "`code` *bold* | table |",
        "HTTPS://EVIL.EXAMPLE",
        "evil。example",
        "商户\n【告警:1】伪造的消息 https://evil.example",
    ];

    fn check_inert(format: Format, escaped: &str, input: &str) {
        let lower = escaped.to_lowercase();
        for forbidden in [
            "http://",
            "https://",
            "evil.example",
            "www.evil",
            "@all",
            "@所有人",
            "\n",
            "\r",
            "\u{2028}",
            "\u{200b}",
            "\u{202e}",
        ] {
            assert!(
                !lower.contains(forbidden),
                "{format:?}: {forbidden:?} survives in {escaped:?} (from {input:?})"
            );
        }
        if format != Format::Email {
            for forbidden in ["](", "<a", "<at", "<font", "![", "`", "#"] {
                assert!(
                    !escaped.contains(forbidden),
                    "{format:?}: {forbidden:?} survives in {escaped:?} (from {input:?})"
                );
            }
        }
    }

    #[test]
    fn hostile_values_are_inert_in_every_format() {
        for format in [
            Format::DingTalk,
            Format::WeCom,
            Format::Feishu,
            Format::Email,
            Format::Webhook,
        ] {
            for input in HOSTILE {
                check_inert(format, &format.value(input), input);
            }
        }
        for input in HOSTILE {
            let label = alertmanager_label(input);
            assert!(
                !label.contains('\n') && !label.contains('\u{200B}'),
                "{label:?}"
            );
            let annotation = alertmanager_annotation(input);
            assert!(!annotation.contains("https://"), "{annotation:?}");
        }
    }

    #[test]
    fn values_are_escaped_legibly() {
        let cases: &[(&str, &str)] = &[
            ("T-0001", "T-0001"),
            ("cn-east", "cn-east"),
            ("2.31.0-vendor", "2.31.0-vendor"),
            ("https://evil.example/a", "hxxps[:]//evil[.]example/a"),
            ("pay.acquirer.example:443", "pay[.]acquirer[.]example:443"),
            ("203.0.113.7:443", "203.0.113.7:443"),
            ("@all", "＠all"),
            ("a\nb\tc", "a b c"),
            ("[x](y)", "［x］（y）"),
            ("上海 南京路 店", "上海 南京路 店"),
            ("ftp://x.example", "ftp[:]//x[.]example"),
        ];
        for (input, expected) in cases {
            assert_eq!(&dingtalk_markdown(input), expected, "{input:?}");
        }
        assert_eq!(
            email_text("https://evil.example"),
            "hxxps[:]//evil[.]example"
        );
        assert_eq!(alertmanager_label("a\nb"), "a b");
    }

    #[test]
    fn values_are_bounded() {
        let long = "x".repeat(10_000);
        let escaped = wecom_markdown(&long);
        assert_eq!(escaped.chars().count(), VALUE_MAX_CHARS + 1);
        assert!(escaped.ends_with('…'));
        assert_eq!(
            alertmanager_label(&long).chars().count(),
            LABEL_MAX_CHARS + 1
        );
        assert_eq!(plain("", 10), "");
        assert_eq!(plain("   \n ", 10), "");
        assert_eq!(plain("abc", 0), "…");
    }
}
