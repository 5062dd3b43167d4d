//! OS locales for servers that speak another language (`lc_messages`):
//! Debian's `initdb` takes the server's language from the OS locale, and
//! walrelay must decide the same way whatever that language is.

use std::process::Command;
use std::sync::Mutex;

static GENERATING: Mutex<()> = Mutex::new(());

/// Makes `name` (e.g. `de_DE.UTF-8`) an installed OS locale, generating it
/// with `localedef` when `locale -a` lacks it (needs root, or a writable
/// locale archive); panics saying how to install it otherwise.
pub fn ensure_locale(name: &str) {
    let _one_at_a_time = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    if installed(name) {
        return;
    }
    let (language, charset) = name
        .split_once('.')
        .unwrap_or_else(|| panic!("locale {name:?} should read language.charset"));
    let out = Command::new("localedef")
        .args(["-i", language, "-f", charset, name])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run localedef for {name}: {e} (install the `locales` package)")
        });
    assert!(
        installed(name),
        "localedef -i {language} -f {charset} {name} did not install the locale ({}):\n{}{}\n\
         install it with `localedef` as root, or the `locales` package",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `locale -a` lists `name` (it prints `de_DE.utf8` for `de_DE.UTF-8`).
fn installed(name: &str) -> bool {
    let normal = |s: &str| s.to_lowercase().replace(['-', '_'], "");
    let Ok(out) = Command::new("locale").arg("-a").output() else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| normal(l) == normal(name))
}
