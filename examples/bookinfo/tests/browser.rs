//! What a newcomer sees: Bookinfo started in-process (as `cargo run -p bookinfo` starts it,
//! here on port 0 with the `reviews-v3` scenario, so that the stars are red), and Debian's
//! headless Chromium opening `/productpage` through the gateway. The DOM Chromium built must
//! have the page's title and the reviews block (v3's red stars, "Reviews served by"), and its
//! screenshot must be a real rendering: a PNG of the window's size, many colours, and the red
//! of the stars.
//!
//! Chromium comes from Debian's `chromium` package, which `.ci/run` installs. Without it the
//! test is skipped with a note, unless `CI` is set: then a missing browser is a failure.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bookinfo::{Bookinfo, Options};

/// The window, as the brief of the screenshot says: a laptop's browser.
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
/// One Chromium run (a cold start on a loaded 2-core machine takes several seconds).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium's path: `chromium` (Debian) or `chromium-browser` on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// A fresh folder under the system's temporary folder.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bookinfo-browser-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with a new profile in `profile` and `args`; its stdout.
///
/// The flags are those that work on these machines as root and offline: no sandbox (root),
/// no GPU, and none of the background connections (updates, sync, QUIC probes) a closed
/// network refuses.
async fn chromium(chromium: &Path, profile: &Path, args: &[String]) -> String {
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(CHROMIUM_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running {}: {e}", chromium.display()));
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The screenshot's pixels as RGB, checking it is a PNG of the window's size.
fn decode_rgb(png_path: &Path) -> Vec<[u8; 3]> {
    let file = std::fs::File::open(png_path)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png_path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", png_path.display()));
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane image size")];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (WIDTH, HEIGHT));
    let bytes = &buf[..frame.buffer_size()];
    match frame.color_type {
        png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => bytes.iter().map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => bytes.chunks_exact(2).map(|p| [p[0]; 3]).collect(),
        other => panic!("unexpected colour type {other:?} after expansion"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn headless_chromium_shows_the_title_and_the_reviews_block() {
    let Some(browser) = find_chromium() else {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "CI is set and there is no chromium on PATH: .ci/run installs Debian's \
             `chromium` package (apt-get install chromium)"
        );
        eprintln!(
            "note: skipping the browser test: no chromium on PATH \
             (install Debian's: apt-get install chromium)"
        );
        return;
    };
    let bookinfo = Bookinfo::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Some("reviews-v3".into()),
        config_dir: None,
    })
    .await
    .unwrap();
    let url = bookinfo.url();
    let dir = temp_dir();

    // The DOM, after Chromium loaded the page and its stylesheet.
    let dom = chromium(
        &browser,
        &dir.join("profile-dom"),
        &["--dump-dom".into(), url.clone()],
    )
    .await;
    assert!(
        dom.contains("<title>Simple Bookstore App</title>"),
        "no title in:\n{dom}"
    );
    let reviews = dom
        .split("<section class=\"reviews\" id=\"reviews\">")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no reviews block in:\n{dom}"));
    assert!(reviews.contains("<h4>Book Reviews</h4>"), "{reviews}");
    assert_eq!(
        reviews.matches("<font color=\"red\">").count(),
        2,
        "{reviews}"
    );
    assert_eq!(
        reviews.matches("Reviews served by: reviews-v3").count(),
        2,
        "{reviews}"
    );

    // The screenshot: a real rendering, with the stars' red in it.
    let shot = dir.join("productpage.png");
    chromium(
        &browser,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={WIDTH},{HEIGHT}"),
            url,
        ],
    )
    .await;
    let pixels = decode_rgb(&shot);
    let colours: HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(
        colours.len() >= 100,
        "a blank or flat screenshot: {} colours ({})",
        colours.len(),
        shot.display()
    );
    let white = pixels.iter().filter(|p| **p == [255, 255, 255]).count();
    assert!(
        white < pixels.len() * 95 / 100,
        "the screenshot is almost all white ({})",
        shot.display()
    );
    // v3's stars are `<font color="red">`: pure red, where the text is anti-aliased.
    let red = pixels
        .iter()
        .filter(|[r, g, b]| *r >= 200 && *g <= 60 && *b <= 60)
        .count();
    assert!(
        red >= 50,
        "no red stars in the screenshot ({red} red pixels; {})",
        shot.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
