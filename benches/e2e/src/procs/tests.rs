use super::*;

#[test]
fn stat_fields_survive_a_command_name_with_spaces_and_parens() {
    let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
    let f = stat_fields(stat);
    assert_eq!(f[0], "S");
    assert_eq!(f[1], "1", "parent pid");
    assert_eq!(f[11], "250", "utime");
    assert_eq!(f[12], "75", "stime");
}

#[test]
fn a_child_is_in_the_tree_and_its_memory_and_cpu_are_read() {
    let work = std::env::temp_dir().join(format!("mesh-e2e-procs-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mut p = Proc::spawn(
        "busy loop",
        None,
        Path::new("sh"),
        &["-c".into(), "while :; do :; done".into()],
        &[],
        &work.join("log"),
    )
    .unwrap();
    let pid = p.pid();
    assert!(tree(std::process::id()).contains(&pid));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cpu_seconds(&[pid], clk_tck()) < 0.05 {
        assert!(Instant::now() < deadline, "the busy loop used no CPU");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss, hwm) = memory_mib(&[pid]);
    assert!(rss > 0.0 && hwm >= rss, "rss {rss} hwm {hwm}");
    assert!(p.exited().is_none());
    drop(p);
    assert!(!alive(pid), "dropping a Proc stops the process");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn get_and_wait_ready_against_a_tiny_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).unwrap();
        let body = [b'x'; 1024];
        write!(s, "HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n").unwrap();
        s.write_all(&body).unwrap();
    });
    wait_ready(addr, "h", Duration::from_secs(5), &mut []).unwrap();
    server.join().unwrap();
    // Nothing listens any more: readiness fails within its deadline, naming the address.
    let err = wait_ready(addr, "h", Duration::from_millis(300), &mut []).unwrap_err();
    assert!(err.contains(&addr.to_string()), "{err}");
}
