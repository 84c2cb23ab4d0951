use sansh::testing::Pair;
use sansh::{Event, HostKeyAlgorithm};

#[test]
fn smoke() {
    let mut pair = Pair::with_host_key(HostKeyAlgorithm::Ed25519, 0, 1);
    pair.handshake().unwrap();
    for e in &pair.client_events {
        println!("C {e:?}");
    }
    for e in &pair.server_events {
        println!("S {e:?}");
    }
    assert!(
        pair.client_events
            .iter()
            .any(|(_, e)| matches!(e, Event::KexCompleted { .. }))
    );
}
