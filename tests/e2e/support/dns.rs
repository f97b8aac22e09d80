//! A tiny in-process authoritative DNS server for tests.
//!
//! Every A query is answered with 127.0.0.1 (so http-01 and tls-alpn-01 reach
//! responders on IPv4 loopback), AAAA and every other type get NOERROR with no
//! answers (an empty AAAA keeps validators off `::1`, where nothing listens),
//! and TXT answers come from a map the test fills in right before validating.
//! It listens on UDP and TCP on the same port so a resolver can fall back to
//! TCP after a truncated answer.
//!
//! Include it with `#[path = "support/dns.rs"] mod dns;` (integration tests) or
//! through a `support/mod.rs` that declares `pub mod dns;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

type TxtMap = Arc<Mutex<HashMap<String, Vec<String>>>>;

pub struct TestDns {
    pub addr: SocketAddr,
    txt: TxtMap,
    tasks: Vec<JoinHandle<()>>,
}

impl TestDns {
    /// Binds UDP and TCP on one ephemeral port of 127.0.0.1 and starts serving.
    pub async fn start() -> TestDns {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp local addr");
        let txt: TxtMap = Arc::default();
        let udp_task = tokio::spawn(serve_udp(udp, txt.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, txt.clone()));
        TestDns { addr, txt, tasks: vec![udp_task, tcp_task] }
    }

    /// Replaces the TXT records at `name` (one record per value).
    pub fn set_txt(&self, name: &str, values: Vec<String>) {
        self.txt.lock().expect("txt map").insert(normalize(name), values);
    }

    pub fn clear_txt(&self, name: &str) {
        self.txt.lock().expect("txt map").remove(&normalize(name));
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// UDP picks the port, TCP must get the same one; another process may hold it
/// for TCP, so retry with a fresh UDP port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind udp");
        let Ok(addr) = udp.local_addr() else { continue };
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("could not bind UDP and TCP on the same port of 127.0.0.1");
}

async fn serve_udp(socket: UdpSocket, txt: TxtMap) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { continue };
        let Ok(request) = Message::from_vec(&buf[..len]) else { continue };
        let response = answer(&request, &txt);
        let Ok(mut bytes) = response.to_vec() else { continue };
        // Too big for the client's UDP buffer: say so, and it retries over TCP.
        if bytes.len() > usize::from(request.max_payload()) {
            let Ok(truncated) = response.truncate().to_vec() else { continue };
            bytes = truncated;
        }
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, txt: TxtMap) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve_tcp_conn(stream, txt.clone()));
    }
}

/// DNS over TCP: each message is preceded by its two-byte length.
async fn serve_tcp_conn(mut stream: TcpStream, txt: TxtMap) {
    loop {
        let Ok(len) = stream.read_u16().await else { return };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(request) = Message::from_vec(&buf) else { return };
        let Ok(bytes) = answer(&request, &txt).to_vec() else { return };
        let Ok(len) = u16::try_from(bytes.len()) else { return };
        if stream.write_u16(len).await.is_err() || stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

fn answer(request: &Message, txt: &TxtMap) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        // RFC 6891: an EDNS query gets an EDNS answer.
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        response.set_edns(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response;
    }
    for query in &request.queries {
        let name = query.name().clone();
        match query.query_type() {
            RecordType::A => {
                response.add_answer(Record::from_rdata(name, 0, RData::A(A(Ipv4Addr::LOCALHOST))));
            }
            RecordType::TXT => {
                let key = normalize(&name.to_ascii());
                let values = txt.lock().map(|m| m.get(&key).cloned()).ok().flatten();
                for value in values.unwrap_or_default() {
                    // A character-string holds at most 255 octets; longer values
                    // are split and the client joins them back.
                    let chunks: Vec<&[u8]> = value.as_bytes().chunks(255).collect();
                    let rdata = if chunks.is_empty() { TXT::new(vec![String::new()]) } else { TXT::from_bytes(chunks) };
                    response.add_answer(Record::from_rdata(name.clone(), 0, RData::TXT(rdata)));
                }
            }
            // AAAA, CAA and the rest: the name exists, with no records of that type.
            _ => {}
        }
    }
    response
}
