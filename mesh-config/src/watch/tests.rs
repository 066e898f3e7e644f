//! The watcher on real files: every wait is bounded, so a broken watcher fails in seconds.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use notify::{
    Event, EventKind,
    event::{AccessKind, AccessMode, CreateKind, ModifyKind},
};

use super::{Reload, Watcher, targets::Targets};
use crate::{LoadError, Loader, Mesh};

/// Long enough for a debounce and a load on a busy machine; a failure still ends the test.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing happens" is watched for: several debounce periods.
const QUIET: Duration = Duration::from_millis(700);

/// A fresh folder under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-config-watch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A VirtualService for `host` (an external name, so no registry is needed).
fn vs(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n"
    )
}

/// An unknown field on line 6.
const BAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n\
                   spec:\n  hosts: [bad.example]\n  htp: []\n";

fn hosts(mesh: &Mesh) -> Vec<String> {
    mesh.virtual_hosts
        .iter()
        .flat_map(|vh| vh.hosts.iter().map(|h| h.to_string()))
        .collect()
}

fn start(path: &Path) -> (Mesh, Watcher, Receiver<Reload>) {
    let (tx, rx) = mpsc::channel();
    let (mesh, watcher) = Loader::new()
        .watch([path], move |r| {
            let _ = tx.send(r);
        })
        .expect("first load");
    (mesh, watcher, rx)
}

fn next(rx: &Receiver<Reload>) -> Reload {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no reload reported within {WAIT:?}: {e}"))
}

fn reloaded(rx: &Receiver<Reload>) -> Mesh {
    match next(rx) {
        Reload::Reloaded { mesh } => mesh,
        Reload::Rejected { error } => panic!("expected a reload, got a rejection: {error}"),
    }
}

fn assert_quiet(rx: &Receiver<Reload>) {
    match rx.recv_timeout(QUIET) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(r) => panic!("expected no reload, got {r:?}"),
        Err(e) => panic!("the watcher went away: {e}"),
    }
}

/// What editors do: write a temporary file beside the target, then rename it over.
fn rename_over(target: &Path, text: &str) {
    let tmp = target.with_extension("yaml.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

#[test]
fn a_change_in_a_folder_reloads_with_a_larger_version() {
    let dir = TempDir::new("folder");
    std::fs::write(dir.path("vs.yaml"), vs("a.example")).unwrap();
    let (first, _watcher, rx) = start(&dir.0);
    assert_eq!(hosts(&first), ["a.example"]);

    std::fs::write(dir.path("vs.yaml"), vs("b.example")).unwrap();
    let second = reloaded(&rx);
    assert_eq!(hosts(&second), ["b.example"]);
    assert!(
        second.version > first.version,
        "{} > {}",
        second.version,
        first.version
    );

    // A new file in the folder is part of the config too.
    std::fs::write(
        dir.path("more.yaml"),
        vs("c.example").replace("name: web", "name: more"),
    )
    .unwrap();
    let third = reloaded(&rx);
    assert_eq!(hosts(&third).len(), 2, "{:?}", hosts(&third));
    assert!(third.version > second.version);
}

#[test]
fn a_bad_write_is_rejected_with_its_location_and_a_good_one_clears_it() {
    let dir = TempDir::new("bad");
    let file = dir.path("vs.yaml");
    std::fs::write(&file, vs("a.example")).unwrap();
    let (_first, _watcher, rx) = start(&dir.0);

    std::fs::write(&file, BAD).unwrap();
    match next(&rx) {
        Reload::Rejected {
            error: LoadError::Invalid { diagnostics },
        } => {
            let err = diagnostics.errors().next().expect("an error");
            assert!(err.file.ends_with("vs.yaml"), "{err}");
            assert_eq!((err.line, err.column), (6, 3), "{err}");
            assert!(err.message.contains("htp"), "{err}");
        }
        other => panic!("expected an invalid config, got {other:?}"),
    }

    std::fs::write(&file, vs("b.example")).unwrap();
    assert_eq!(hosts(&reloaded(&rx)), ["b.example"]);
}

#[test]
fn the_same_bytes_or_files_that_are_not_config_do_not_reload() {
    let dir = TempDir::new("same");
    let file = dir.path("vs.yaml");
    std::fs::write(&file, vs("a.example")).unwrap();
    let (_first, _watcher, rx) = start(&dir.0);

    std::fs::write(&file, vs("a.example")).unwrap(); // saved without a change
    rename_over(&file, &vs("a.example"));
    std::fs::write(dir.path("notes.txt"), "not yaml").unwrap();
    std::fs::write(dir.path(".vs.yaml.swp"), "an editor's swap file").unwrap();
    assert_quiet(&rx);

    // And the watcher is alive: a real change still reloads.
    std::fs::write(&file, vs("b.example")).unwrap();
    assert_eq!(hosts(&reloaded(&rx)), ["b.example"]);
}

#[test]
fn a_file_path_sees_rename_over_saves_and_ignores_its_siblings() {
    let dir = TempDir::new("file");
    let file = dir.path("vs.yaml");
    std::fs::write(&file, vs("a.example")).unwrap();
    let (_first, _watcher, rx) = start(&file);

    // A sibling is not part of this config.
    std::fs::write(dir.path("other.yaml"), vs("x.example")).unwrap();
    assert_quiet(&rx);

    rename_over(&file, &vs("b.example"));
    assert_eq!(hosts(&reloaded(&rx)), ["b.example"]);
    // The watch survives the rename: a second save is seen as well.
    rename_over(&file, &vs("c.example"));
    assert_eq!(hosts(&reloaded(&rx)), ["c.example"]);
}

/// A Kubernetes ConfigMap volume: `..data -> ..<timestamp>/`, and each key a symlink through
/// `..data`. An update writes a new timestamped folder, points `..data_tmp` at it, renames
/// `..data_tmp` over `..data`, and removes the old folder.
#[cfg(unix)]
mod configmap {
    use super::*;

    fn mount(dir: &TempDir, text: &str) {
        let data = dir.path("..2026_01_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("vs.yaml"), text).unwrap();
        std::os::unix::fs::symlink("..2026_01_01", dir.path("..data")).unwrap();
        std::os::unix::fs::symlink("..data/vs.yaml", dir.path("vs.yaml")).unwrap();
    }

    fn update(dir: &TempDir, text: &str) {
        let data = dir.path("..2026_01_02");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("vs.yaml"), text).unwrap();
        std::os::unix::fs::symlink("..2026_01_02", dir.path("..data_tmp")).unwrap();
        std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
        std::fs::remove_dir_all(dir.path("..2026_01_01")).unwrap();
    }

    #[test]
    fn a_folder_mount_sees_the_data_swap() {
        let dir = TempDir::new("cm-folder");
        mount(&dir, &vs("a.example"));
        let (first, _watcher, rx) = start(&dir.0);
        assert_eq!(hosts(&first), ["a.example"]);
        update(&dir, &vs("b.example"));
        assert_eq!(hosts(&reloaded(&rx)), ["b.example"]);
    }

    #[test]
    fn a_file_of_the_mount_sees_the_data_swap() {
        let dir = TempDir::new("cm-file");
        mount(&dir, &vs("a.example"));
        let (_first, _watcher, rx) = start(&dir.path("vs.yaml"));
        update(&dir, &vs("b.example"));
        assert_eq!(hosts(&reloaded(&rx)), ["b.example"]);
    }
}

#[test]
fn a_burst_of_writes_is_coalesced_and_ends_on_the_last() {
    let dir = TempDir::new("burst");
    let file = dir.path("vs.yaml");
    std::fs::write(&file, vs("a.example")).unwrap();
    let (_first, _watcher, rx) = start(&dir.0);

    const WRITES: usize = 40;
    for i in 0..WRITES {
        std::fs::write(&file, vs(&format!("h{i}.example"))).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // a user typing and saving fast
    }
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    let mut count = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "reloads did not settle within {WAIT:?}"
        );
        match rx.recv_timeout(QUIET) {
            Ok(Reload::Reloaded { mesh }) => {
                count += 1;
                last = Some(mesh);
            }
            Ok(Reload::Rejected { error }) => panic!("{error}"),
            Err(RecvTimeoutError::Timeout) if last.is_some() => break,
            Err(e) => panic!("no reload: {e}"),
        }
    }
    assert_eq!(hosts(&last.unwrap()), [format!("h{}.example", WRITES - 1)]);
    assert!(
        count <= 5,
        "{count} reloads for one burst of {WRITES} writes"
    );
}

#[test]
fn stop_ends_the_threads_and_drops_the_callback() {
    let dir = TempDir::new("stop");
    std::fs::write(dir.path("vs.yaml"), vs("a.example")).unwrap();
    let (_first, watcher, rx) = start(&dir.0);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        watcher.stop();
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(WAIT).expect("stop did not return");
    std::fs::write(dir.path("vs.yaml"), vs("b.example")).unwrap();
    // The callback (and its sender) went with the worker thread.
    assert!(matches!(
        rx.recv_timeout(WAIT),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn a_bad_first_load_or_a_missing_path_is_an_error() {
    let dir = TempDir::new("first");
    std::fs::write(dir.path("vs.yaml"), BAD).unwrap();
    match Loader::new().watch([&dir.0], |_| {}) {
        Err(LoadError::Invalid { diagnostics }) => assert!(diagnostics.has_errors()),
        other => panic!("expected the diagnostics, got {other:?}"),
    }
    let missing = dir.path("nope.yaml");
    match Loader::new().watch([&missing], |_| {}) {
        Err(LoadError::Io(e)) => assert!(e.to_string().contains("nope.yaml"), "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

// === Targets ===

fn event(kind: EventKind, path: &str) -> Event {
    Event::new(kind).add_path(PathBuf::from(path))
}

#[test]
fn targets_keep_changes_to_the_named_files_and_the_configmap_links() {
    let t = Targets {
        trees: vec![PathBuf::from("/cfg/tree")],
        parents: vec![(PathBuf::from("/cfg"), vec!["vs.yaml".into()])],
    };
    let modify = EventKind::Modify(ModifyKind::Any);
    let create = EventKind::Create(CreateKind::File);
    assert!(t.concerns(&event(modify, "/cfg/vs.yaml")));
    assert!(t.concerns(&event(create, "/cfg/..data")));
    assert!(t.concerns(&event(modify, "/cfg/tree/deep/any.yaml")));
    assert!(!t.concerns(&event(modify, "/cfg/other.yaml")));
    assert!(!t.concerns(&event(modify, "/elsewhere/vs.yaml")));
    // The watcher's own reads are not changes; a close after writing is.
    let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
    assert!(!t.concerns(&event(open, "/cfg/vs.yaml")));
    let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
    assert!(t.concerns(&event(closed, "/cfg/vs.yaml")));
    // The tree is watched recursively, the file's folder alone; a parent inside a tree is not
    // watched twice.
    let t2 = Targets {
        trees: vec![PathBuf::from("/cfg")],
        parents: vec![(PathBuf::from("/cfg/sub"), vec!["x.yaml".into()])],
    };
    assert_eq!(t2.watches().count(), 1);
    assert_eq!(t.watches().count(), 2);
}
