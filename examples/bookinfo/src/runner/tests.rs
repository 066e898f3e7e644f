use std::{net::SocketAddr, time::Duration};

use super::{Bookinfo, Options, SCENARIO_FILE, StartError, files};
use crate::{scenarios, workloads::WORKLOADS};

#[test]
fn the_folder_gets_the_base_the_workloads_and_the_scenario() {
    let dir = files::fresh_dir().unwrap();
    let bound: Vec<_> = WORKLOADS
        .iter()
        .enumerate()
        .map(|(i, w)| (w, SocketAddr::from(([127, 0, 0, 1], 41000 + i as u16))))
        .collect();
    let scenario = scenarios::find("reviews-v3");
    files::write_all(&dir, bound.iter().map(|(w, a)| (*w, *a)), scenario).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "destination-rules.yaml",
            "gateway.yaml",
            SCENARIO_FILE,
            "services.yaml",
            "workloads.yaml"
        ]
    );
    let mesh = mesh_config::load([&dir]).unwrap();
    assert!(mesh.warnings().0.is_empty(), "{}", mesh.warnings());

    // No scenario: the file goes, the rest stays.
    files::write_all(&dir, bound.iter().map(|(w, a)| (*w, *a)), None).unwrap();
    assert!(!dir.join(SCENARIO_FILE).exists());
    assert!(dir.join("workloads.yaml").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scenario_is_refused_with_the_list() {
    let err = Bookinfo::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Some("reviews-v4".into()),
        config_dir: None,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::UnknownScenario { .. }));
    assert!(err.to_string().contains("reviews-v3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_names_the_url_the_folder_and_every_scenario() {
    let running = Bookinfo::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Some("all-v1".into()),
        config_dir: None,
    })
    .await
    .unwrap();
    let banner = running.banner();
    assert!(banner.contains(&format!(
        "Open http://{}/productpage",
        running.gateway_addr()
    )));
    assert!(banner.contains(&running.config_dir().display().to_string()));
    assert!(banner.contains("Scenario: all-v1"));
    for s in scenarios::SCENARIOS {
        assert!(banner.contains(s.name), "{}", s.name);
    }
    let dir = running.config_dir().to_owned();
    assert!(dir.join(SCENARIO_FILE).exists());
    running.shutdown().await;
    tokio::time::sleep(Duration::ZERO).await;
    assert!(!dir.exists(), "the folder the runner made is removed");
}
