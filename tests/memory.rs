//! Networks too large for this machine are refused before anything is allocated, by `simulate`
//! and `validate` alike; networks that fit are not. (One test in this file, so that the
//! children's peak memory read below is that of the commands run here.)

mod common;

use std::time::Instant;

use common::{repo, snn};

/// The largest resident set of any child process waited for so far, in KiB.
fn children_peak_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss
}

#[test]
fn an_oversized_network_is_refused_at_once_and_one_that_fits_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // CUBA as a new user might scale it: 4e8 excitatory neurons at p = 0.02, 3.2e15 synapses.
    let cuba = std::fs::read_to_string(repo("networks/cuba.ron")).unwrap();
    let big = dir.path().join("big.ron");
    std::fs::write(&big, cuba.replace("size: 3200,", "size: 400000000,")).unwrap();
    let out = dir.path().join("out");
    for command in [
        vec!["simulate", big.to_str().unwrap(), "--no-figures", "--out", out.to_str().unwrap()],
        vec!["validate", big.to_str().unwrap()],
    ] {
        let started = Instant::now();
        let o = snn(&command, None);
        let seconds = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {stderr}", command[0]);
        assert!(stderr.contains("big.ron: needs about") && stderr.contains("3.2e15 synapses"), "{stderr}");
        assert!(stderr.contains("available"), "{stderr}");
        assert!(seconds < 5.0, "{} took {seconds} s to refuse", command[0]);
    }
    assert!(!out.exists(), "nothing is written");
    let peak = children_peak_kib();
    assert!(peak < 100 * 1024, "a refusing run peaked at {peak} KiB");

    for network in ["networks/cuba.ron", "benches/networks/brunel.ron"] {
        let o = snn(&["validate", &repo(network)], None);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{network}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.contains("valid network:") && stdout.contains("of memory"), "{stdout}");
    }
}
