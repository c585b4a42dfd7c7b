//! Where arcad's log goes. Under systemd, where stderr is a stream into the journal, arcad speaks
//! journald's native protocol instead (tracing-journald), so that each event's fields arrive as
//! journal fields and can be queried (`journalctl -u arcad MODEL=resnet ARCA_EVENT=…`), with
//! the event's level as its `PRIORITY`; anywhere else, plain text on stderr.
//!
//! Fields are named as arcad's tracing fields, upper-cased, with no prefix (tracing-journald adds
//! `F_` unless told otherwise): `model`, `version`, `file` and `chunk` become `MODEL`, `VERSION`,
//! `FILE` and `CHUNK`, and `arca_event` (an audit event type, `EventKind::as_str`) becomes
//! `ARCA_EVENT`. No arcad field is named like one of journald's own (`MESSAGE`, `PRIORITY`,
//! `TARGET`, `CODE_*`, `SYSLOG_*`), and journald refuses names starting with `_` (its trusted
//! fields) from clients anyway. tracing-journald sends to journald's fixed socket,
//! `/run/systemd/journal/socket`; there is no setting for another one.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Whether `journal_stream` (the `JOURNAL_STREAM` variable, `DEVICE:INODE` in decimal) names the
/// file `dev` and `ino` describe.
fn names(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Whether stderr is the stream systemd connected to the journal. systemd.exec(5): the service
/// manager sets `JOURNAL_STREAM` to that stream's device and inode, and a program should use the
/// native protocol only if they are its stderr's: a process that inherited the variable from a
/// service but whose stderr was redirected (a shell, a test) must not be taken for the service.
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => names(&v, st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// Installs the global subscriber: journald's native protocol when `stderr_is_journal`, else
/// text on stderr (also when the journal's socket cannot be reached, which is then logged).
/// Returns whether the log goes to journald.
pub fn init(filter: EnvFilter) -> bool {
    let (journald, unreachable) = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(l) => (
                Some(
                    l.with_field_prefix(None)
                        .with_syslog_identifier("arcad".into()),
                ),
                None,
            ),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let native = journald.is_some();
    let text = (!native).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // No colour codes in the journal or a log file.
            .with_ansi(std::io::stderr().is_terminal())
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(text)
        .init();
    if let Some(e) = unreachable {
        tracing::warn!("JOURNAL_STREAM names stderr, but journald's socket cannot be reached ({e}): logging text to stderr");
    }
    native
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn journal_stream_must_name_this_very_file() {
        assert!(names("64:12345", 64, 12345));
        assert!(!names("64:12345", 64, 12346));
        assert!(!names("65:12345", 64, 12345));
        assert!(!names("64:", 64, 0));
        assert!(!names("", 0, 0));
        assert!(!names("64:12345:1", 64, 12345));
        assert!(!names("x:12345", 64, 12345));
    }
}
