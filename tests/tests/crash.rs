//! Crash safety: a broker child process under load from 16 concurrent MLLP
//! connections is SIGKILLed (several times); after each restart every message
//! that received an AA is in the topic, byte for byte, and offsets are dense.

use medbus_tests::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONNECTIONS: usize = 16;
const KILLS: usize = 3;

fn message(control_id: &str, pad: usize) -> Vec<u8> {
    let mut m = adt_a01(control_id, "CRASH");
    // Vary sizes so records straddle sled's buffers differently.
    m.extend_from_slice(b"NTE|1||");
    m.extend(std::iter::repeat_n(
        b'a' + (pad % 26) as u8,
        200 + pad % 1800,
    ));
    m.push(b'\r');
    m
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let config = listener_config("load", "");
    let acked: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();

    for round in 0..KILLS {
        let broker = Broker::start(&config, &data);
        let addr = broker.mllp("load");
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|t| {
                let acked = acked.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut c = MllpClient::connect(addr);
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("R{round}T{t}N{n}");
                        let msg = message(&id, t * 7919 + n);
                        let Some(ack) = c.try_request(&msg) else {
                            break;
                        };
                        if field(&ack, "MSA", 1).as_deref() == Some("AA") {
                            assert_eq!(field(&ack, "MSA", 2).as_deref(), Some(id.as_str()));
                            acked.lock().expect("lock").insert(id, msg);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        // Let load build up (a duration, not an assertion), then crash.
        std::thread::sleep(Duration::from_millis(1500));
        broker.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker");
        }
    }

    // Restart once more: recovery works and the broker accepts new work.
    let broker = Broker::start(&config, &data);
    let ack = MllpClient::connect(broker.mllp("load")).request(&message("AFTER", 1));
    assert_eq!(field(&ack, "MSA", 1).as_deref(), Some("AA"));
    assert_eq!(broker.stop(), Some(0));

    let records = dump(&data, "hl7.inbound");
    let acked = acked.lock().expect("lock");
    assert!(
        acked.len() > 100,
        "too little load to test anything: {}",
        acked.len()
    );
    let mut stored: HashMap<String, String> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"].as_u64(), Some(i as u64), "offsets are dense");
        let id = r["headers"]["hl7.control_id"]
            .as_str()
            .expect("control id")
            .to_string();
        let payload = r["payload"].as_str().expect("payload").to_string();
        stored.insert(id, payload);
    }
    let mut lost = Vec::new();
    for (id, msg) in acked.iter() {
        match stored.get(id) {
            Some(p) if p.as_bytes() == &msg[..] => {}
            Some(_) => lost.push(format!("{id} (altered)")),
            None => lost.push(id.clone()),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(stored.contains_key("AFTER"));
    eprintln!(
        "{} acknowledged messages across {KILLS} kill -9 rounds, all present",
        acked.len()
    );
}
