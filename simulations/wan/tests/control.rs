//! The admin line protocol, end to end over loopback.
// Helpers outside #[test] fns are tests too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_wan::{control, serve_control, LinkSpec, Wan, WanError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(5);

async fn server() -> (Arc<Wan>, String) {
    let wan = Wan::new();
    wan.set_link("us-east", "eu-west", LinkSpec::from_rtt_ms(75));
    wan.set_link("us-east", "ap-south", LinkSpec::from_rtt_ms(200));
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (addr, _task) = serve_control(wan.clone(), listen).await.unwrap();
    (wan, addr.to_string())
}

/// Sends `command` and checks the reply: `Ok(s)` means an ok answer containing `s`,
/// `Err(s)` a control error containing `s`.
async fn check(addr: &str, command: &str, expected: Result<&str, &str>) {
    let got = timeout(DEADLINE * 2, control(addr, command, DEADLINE))
        .await
        .unwrap();
    match (&got, expected) {
        (Ok(text), Ok(want)) if text.contains(want) => {}
        (Err(WanError::Control(text)), Err(want)) if text.contains(want) => {}
        _ => panic!("{command:?}: expected {expected:?}, got {got:?}"),
    }
}

fn cut_links(wan: &Wan) -> Vec<String> {
    wan.links()
        .into_iter()
        .filter(|l| l.cut)
        .map(|l| format!("{}<->{}", l.a, l.b))
        .collect()
}

/// Every command does what it says, and bad input gets an error line rather than a crash.
#[tokio::test]
async fn commands_change_links_and_report_errors() {
    let (wan, addr) = server().await;
    check(&addr, "cut eu-west us-east", Ok("")).await;
    assert_eq!(cut_links(&wan), ["eu-west<->us-east"]);
    let status = "ap-south<->us-east rtt=200ms cut=false conns=0 bytes=0; \
                  eu-west<->us-east rtt=75ms cut=true conns=0 bytes=0";
    check(&addr, "status", Ok(status)).await;
    check(&addr, "heal us-east eu-west", Ok("")).await;
    assert!(cut_links(&wan).is_empty());

    check(&addr, "cut-region us-east", Ok("")).await;
    assert_eq!(cut_links(&wan).len(), 2);
    check(&addr, "heal-region ap-south", Ok("")).await;
    assert_eq!(cut_links(&wan), ["eu-west<->us-east"]);
    check(&addr, "heal-all", Ok("")).await;
    assert!(cut_links(&wan).is_empty());

    let known = "known links: ap-south<->us-east, eu-west<->us-east";
    check(&addr, "cut us-east mars", Err(known)).await;
    check(&addr, "cut-region mars", Err("unknown region mars")).await;
    check(&addr, "frobnicate", Err("malformed command")).await;
    check(&addr, "cut us-east", Err("expected one of")).await;
    check(&addr, "", Err("malformed command")).await;
    check(&addr, "two\nlines", Err("single line")).await;
    // Still serving after all that.
    check(&addr, "heal-all", Ok("")).await;
}

/// One connection may carry several commands, and an overlong line is refused, not buffered.
#[tokio::test]
async fn raw_protocol_lines() {
    let (_wan, addr) = server().await;
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    for (command, reply) in [("heal-all\n", "ok"), ("nope\n", "error: malformed command")] {
        w.write_all(command.as_bytes()).await.unwrap();
        let line = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap();
        let line = line.unwrap();
        assert!(line.starts_with(reply), "{command:?} got {line:?}");
    }
    w.write_all(&vec![b'x'; 4096]).await.unwrap();
    let line = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap();
    assert!(line.unwrap().starts_with("error: "));
}

/// A server that never answers makes the client fail at its deadline, not hang.
#[tokio::test]
async fn client_honours_its_deadline() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let got = timeout(
        DEADLINE,
        control(&addr, "status", Duration::from_millis(200)),
    )
    .await
    .unwrap();
    match got {
        Err(WanError::Control(msg)) => assert!(msg.contains("no answer"), "{msg}"),
        other => panic!("expected a deadline error, got {other:?}"),
    }
}
