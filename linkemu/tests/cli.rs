//! The `weft-linkemu` binary: command line, `ready`, the control protocol, traffic, SIGTERM.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{tcp_echo, udp_echo, within, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpStream, UdpSocket};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_weft-linkemu");

/// A running `weft-linkemu` and what it printed before `ready`.
struct Emulator {
    child: Child,
    control: SocketAddr,
    /// Each link's listen address, by name.
    links: HashMap<String, SocketAddr>,
    _stdout: Lines<BufReader<ChildStdout>>,
}

async fn launch(links: &[String]) -> Emulator {
    let mut command = Command::new(BIN);
    command.args(["--control", "127.0.0.1:0"]);
    for link in links {
        command.args(["--link", link]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start weft-linkemu");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut control = None;
    let mut listen = HashMap::new();
    loop {
        let line = within(PATIENCE, "weft-linkemu to print ready", stdout.next_line())
            .await
            .expect("read stdout")
            .expect("weft-linkemu exited before ready");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ready"] => break,
            ["control", addr] => control = Some(addr.parse().expect("control address")),
            ["link", name, _proto, addr, "->", _target] => {
                listen.insert(name.to_string(), addr.parse().expect("listen address"));
            }
            _ => panic!("unexpected line before ready: {line:?}"),
        }
    }
    Emulator {
        child,
        control: control.expect("a control line before ready"),
        links: listen,
        _stdout: stdout,
    }
}

/// A connection to the control protocol.
struct Control {
    read: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Control {
    async fn connect(addr: SocketAddr) -> Control {
        let stream = within(PATIENCE, "connect to control", TcpStream::connect(addr))
            .await
            .expect("connect to control");
        let (read, write) = stream.into_split();
        Control {
            read: BufReader::new(read).lines(),
            write,
        }
    }

    async fn line(&mut self) -> String {
        within(PATIENCE, "a control reply", self.read.next_line())
            .await
            .expect("read reply")
            .expect("control closed")
    }

    /// Sends a command and returns its first reply line.
    async fn send(&mut self, command: &str) -> String {
        self.write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("send command");
        self.line().await
    }

    /// Sends `show` and returns the link lines.
    async fn show(&mut self) -> Vec<String> {
        let header = self.send("show").await;
        let count: usize = header
            .strip_prefix("ok ")
            .and_then(|rest| rest.strip_suffix(" links"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad show header {header:?}"));
        let mut lines = Vec::new();
        for _ in 0..count {
            lines.push(self.line().await);
        }
        lines
    }
}

#[tokio::test]
async fn serves_links_and_the_control_protocol_until_sigterm() {
    let (udp_target, _) = udp_echo().await;
    let (tcp_target, _) = tcp_echo().await;
    let mut emulator = launch(&[
        format!("dc2=udp:127.0.0.1:0->{udp_target}"),
        format!("cql=tcp:127.0.0.1:0->{tcp_target}"),
    ])
    .await;
    let mut control = Control::connect(emulator.control).await;

    assert_eq!(
        control
            .send("set dc2 delay=40ms loss=0 blackhole=off")
            .await,
        "ok dc2 delay=40ms loss=0 blackhole=off"
    );
    assert_eq!(control.send("set * loss=1.5").await, "ok set 2 links");
    let shown = control.show().await;
    assert_eq!(shown.len(), 2, "{shown:?}");
    let dc2 = shown
        .iter()
        .find(|l| l.starts_with("dc2 udp "))
        .expect("dc2 shown");
    assert!(dc2.contains(&format!("target={udp_target}")), "{dc2}");
    assert!(dc2.contains("delay=40ms loss=1.5 blackhole=off"), "{dc2}");
    assert!(dc2.contains("to_target.packets=0"), "{dc2}");
    let cql = shown
        .iter()
        .find(|l| l.starts_with("cql tcp "))
        .expect("cql shown");
    assert!(cql.contains("delay=0ms loss=1.5 blackhole=off"), "{cql}");

    // Bad commands change nothing and say why.
    for (bad, why) in [
        ("set nowhere delay=1ms", "unknown link"),
        ("set dc2 delay=fast", "bad duration"),
        ("set dc2 loss=120", "bad loss"),
        ("set dc2 blackhole=maybe", "bad switch"),
        ("set dc2 jitter=1ms", "unknown setting"),
        ("frobnicate", "unknown command"),
    ] {
        let reply = control.send(bad).await;
        assert!(
            reply.starts_with("error: ") && reply.contains(why),
            "{bad}: {reply}"
        );
    }
    assert_eq!(
        control.send("set dc2 loss=0").await,
        "ok dc2 delay=40ms loss=0 blackhole=off"
    );

    // Traffic through the UDP link pays the delay both ways.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    client
        .connect(emulator.links["dc2"])
        .await
        .expect("connect");
    let sent = Instant::now();
    client.send(b"ping").await.expect("send");
    let mut buf = [0u8; 16];
    let n = within(PATIENCE, "echo through dc2", client.recv(&mut buf))
        .await
        .expect("receive");
    assert_eq!(&buf[..n], b"ping");
    let rtt = sent.elapsed();
    assert!(
        rtt >= Duration::from_millis(80),
        "round trip {rtt:?} under 2 x 40 ms"
    );
    let shown = control.show().await;
    let dc2 = shown
        .iter()
        .find(|l| l.starts_with("dc2 "))
        .expect("dc2 shown");
    assert!(
        dc2.contains("flows=1 to_target.packets=1 to_target.bytes=4"),
        "{dc2}"
    );

    // Reset closes a TCP connection through the link.
    let mut stream = TcpStream::connect(emulator.links["cql"])
        .await
        .expect("connect cql");
    stream.write_all(b"hi").await.expect("write");
    let mut hi = [0u8; 2];
    within(
        PATIENCE,
        "echo through cql",
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut hi),
    )
    .await
    .expect("read");
    assert_eq!(control.send("reset cql").await, "ok reset 1 links");
    match within(
        PATIENCE,
        "the reset connection to close",
        tokio::io::AsyncReadExt::read(&mut stream, &mut hi),
    )
    .await
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes after a reset"),
    }

    // SIGTERM stops it cleanly.
    let pid = emulator.child.id().expect("pid");
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .await
        .expect("run kill");
    assert!(killed.success());
    let status = within(
        PATIENCE,
        "weft-linkemu to exit on SIGTERM",
        emulator.child.wait(),
    )
    .await
    .expect("wait");
    assert!(status.success(), "exit status {status}");
}

/// Runs the binary with bad arguments and returns its exit code and standard error.
async fn run_bad(args: &[&str]) -> (Option<i32>, String) {
    let output = within(
        PATIENCE,
        "weft-linkemu to refuse its arguments",
        Command::new(BIN).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("run weft-linkemu");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_malformed_link_exits_with_code_2_and_names_the_bad_part() {
    let control = ["--control", "127.0.0.1:0"];
    for (link, why) in [
        ("dc2=udp:127.0.0.1:7001", "missing \"->\""),
        ("dc2=sctp:127.0.0.1:1->127.0.0.1:2", "bad protocol \"sctp\""),
        (
            "dc2=udp:127.0.0.1:1->nowhere:2",
            "bad target address \"nowhere:2\"",
        ),
        ("udp:127.0.0.1:1->127.0.0.1:2", "missing \"=\""),
    ] {
        let mut args = control.to_vec();
        args.extend(["--link", link]);
        let (code, stderr) = run_bad(&args).await;
        assert_eq!(code, Some(2), "{link}: {stderr}");
        assert!(
            stderr.contains("--link") && stderr.contains(why),
            "{link}: {stderr}"
        );
    }

    let (code, stderr) = run_bad(&[
        "--control",
        "127.0.0.1:0",
        "--link",
        "a=udp:127.0.0.1:0->127.0.0.1:1",
        "--link",
        "a=tcp:127.0.0.1:0->127.0.0.1:1",
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"a\" is given more than once"), "{stderr}");
}
