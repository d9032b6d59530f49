//! Scale check: a sample park (10,000 credentials and 500 doors by default;
//! `SMARTPARK_SCALE_CREDENTIALS` sets another count) is built in batches, saved, loaded, read,
//! indexed, updated incrementally and asked for decisions. Timings are printed (run with
//! `--nocapture`, in a release build for meaningful numbers), never asserted.

use std::time::{Duration, Instant};

use park_model::ParkDirectory;
use park_model::access::{AccessIndex, NoPresence, ReasonCode};
use park_model::directory::{CredentialKey, Presented};
use park_model::sample::{SAMPLE_WORKDAY_MORNING, SampleRng, sample_directory};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_park_of_ten_thousand_credentials_builds_loads_indexes_and_decides() {
    let n: usize = std::env::var("SMARTPARK_SCALE_CREDENTIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let doors = 500;

    let key = CredentialKey::new(&[42; 32]);
    let t = Instant::now();
    let mut park = sample_directory(n, doors, 42, &key).unwrap();
    let build = t.elapsed();
    // What readers send, digested once as the edge does before it decides.
    let presented: Vec<Presented> = park
        .credentials
        .iter()
        .map(|(kind, value)| key.present(*kind, value))
        .collect();

    let t = Instant::now();
    let bytes = park.directory.save();
    let save = t.elapsed();

    let t = Instant::now();
    let mut loaded = ParkDirectory::load(&bytes).unwrap();
    let load = t.elapsed();
    assert_eq!(loaded.heads(), park.directory.heads());

    let t = Instant::now();
    let snapshot = loaded.snapshot().unwrap();
    let read = t.elapsed();
    assert_eq!(snapshot.credentials.len(), n);
    assert!(snapshot.rejected.is_empty());

    let t = Instant::now();
    let mut index = AccessIndex::build(&snapshot, [&park.building.snapshot().unwrap()]);
    let index_build = t.elapsed();
    assert_eq!((index.credential_count(), index.door_count()), (n, doors));

    // Decisions for random (credential, door) pairs, each timed on its own.
    let mut rng = SampleRng::new(7);
    let reads = 200_000;
    let mut times = Vec::with_capacity(reads);
    let mut granted = 0usize;
    for _ in 0..reads {
        let read = &presented[rng.below(n as u64) as usize];
        let door = &park.doors[rng.below(doors as u64) as usize];
        let t = Instant::now();
        let d = index.decide(read, door, SAMPLE_WORKDAY_MORNING, &NoPresence);
        times.push(t.elapsed());
        granted += usize::from(d.granted);
    }
    assert!(granted > 0, "some reads are granted");
    times.sort();
    // The same reads timed as one batch: per-read timing above includes the clock's own cost.
    let mut rng = SampleRng::new(7);
    let picks: Vec<(usize, usize)> = (0..reads)
        .map(|_| {
            (
                rng.below(n as u64) as usize,
                rng.below(doors as u64) as usize,
            )
        })
        .collect();
    let t = Instant::now();
    let mut granted_again = 0usize;
    for &(c, d) in &picks {
        let decision = index.decide(
            &presented[c],
            &park.doors[d],
            SAMPLE_WORKDAY_MORNING,
            &NoPresence,
        );
        granted_again += usize::from(decision.granted);
    }
    let batch = t.elapsed();
    assert_eq!(granted_again, granted);

    // One credential suspended: the change set names it alone and the index follows, whether
    // the change set comes from two sets of heads or from tracking.
    let lobby = &park.doors[0];
    loaded.track_changes();
    let before = loaded.heads();
    loaded.suspend_credential("cred-0000000").unwrap();
    let after = loaded.heads();
    let t = Instant::now();
    let changes = loaded.take_changes();
    let take = t.elapsed();
    let report = index.refresh_directory(&loaded, &changes).unwrap();
    let refresh = t.elapsed();
    assert_eq!(report.upserted, 1);
    let d = index.decide(&presented[0], lobby, SAMPLE_WORKDAY_MORNING, &NoPresence);
    assert_eq!(d.reason, ReasonCode::CredentialSuspended);
    assert_eq!(loaded.changes(&before, &after), changes);
    // Between heads on a document that does not track changes, automerge scans the document.
    let original = &mut park.directory;
    let before = original.heads();
    original.suspend_credential("cred-0000001").unwrap();
    let after = original.heads();
    let t = Instant::now();
    let between_heads = original.changes(&before, &after);
    let diff_heads = t.elapsed();
    assert_eq!(
        between_heads
            .ids(park_model::Collection::Credentials)
            .collect::<Vec<_>>(),
        ["cred-0000001"]
    );

    // What an edge does at every load of the directory: look for values left in clear.
    let t = Instant::now();
    let cleared = loaded.digest_clear_values(&key, None).unwrap();
    let clear_scan = t.elapsed();
    assert!(cleared.is_empty());

    println!("scale: clear_values_scan={clear_scan:?}");
    println!(
        "scale: credentials={n} doors={doors} build={build:?} save={save:?} bytes={} load={load:?} \
         snapshot={read:?} index={index_build:?} refresh_one_tracked={refresh:?} (of which take_changes={take:?}) \
         changes_between_heads={diff_heads:?}",
        bytes.len()
    );
    println!(
        "scale: decide over {reads} reads: mean={:?} (batch); each timed: p50={:?} p99={:?} \
         p999={:?} max={:?}; granted={granted}",
        batch / reads as u32,
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&times, 0.999),
        times[times.len() - 1],
    );
}
