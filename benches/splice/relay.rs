//! A raw TCP relay, for one measurement: what splice(2) on uploads would
//! change (docs/benchmarks.md, "Fifth round"). Not part of the gate.
//!
//! `relay LISTEN UPSTREAM copy|splice`: every accepted connection is joined
//! to a new one to UPSTREAM; client -> upstream bytes are copied through a
//! 512 KiB buffer or spliced through a 1 MiB pipe, upstream -> client bytes
//! are copied. Built by `run.sh` with plain rustc (std only).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

extern "C" {
    fn splice(
        fd_in: i32,
        off_in: *mut i64,
        fd_out: i32,
        off_out: *mut i64,
        len: usize,
        flags: u32,
    ) -> isize;
    fn pipe2(fds: *mut i32, flags: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn close(fd: i32) -> i32;
}

const F_SETPIPE_SZ: i32 = 1031;
const O_CLOEXEC: i32 = 0o2000000;
const SPLICE_F_MOVE: u32 = 1;
const SPLICE_F_MORE: u32 = 4;
const PIPE: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, mode] = &args[..] else {
        eprintln!("usage: relay LISTEN UPSTREAM copy|splice");
        std::process::exit(2);
    };
    let spliced = match mode.as_str() {
        "copy" => false,
        "splice" => true,
        _ => panic!("mode is copy or splice"),
    };
    let listener = TcpListener::bind(listen).expect("bind");
    for client in listener.incoming() {
        let client = client.expect("accept");
        let up = TcpStream::connect(upstream).expect("connect upstream");
        let _ = up.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let (mut back_from, mut back_to) = (up.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = back_from.read(&mut buf) {
                if n == 0 || back_to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = back_to.shutdown(Shutdown::Write);
        });
        if spliced {
            splice_all(&client, &up)
        } else {
            copy_all(&client, &up)
        }
        let _ = up.shutdown(Shutdown::Write);
    }
}

fn copy_all(mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; 512 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn splice_all(from: &TcpStream, to: &TcpStream) {
    let mut fds = [0i32; 2];
    // SAFETY: plain system calls on descriptors this function owns or borrows.
    unsafe {
        assert_eq!(pipe2(fds.as_mut_ptr(), O_CLOEXEC), 0, "pipe2");
        assert!(fcntl(fds[1], F_SETPIPE_SZ, PIPE as i32) > 0, "F_SETPIPE_SZ");
        let null = std::ptr::null_mut();
        loop {
            let n = splice(from.as_raw_fd(), null, fds[1], null, PIPE, SPLICE_F_MOVE);
            if n <= 0 {
                break;
            }
            let mut left = n as usize;
            while left > 0 {
                let w = splice(
                    fds[0],
                    null,
                    to.as_raw_fd(),
                    null,
                    left,
                    SPLICE_F_MOVE | SPLICE_F_MORE,
                );
                if w <= 0 {
                    close(fds[0]);
                    close(fds[1]);
                    return;
                }
                left -= w as usize;
            }
        }
        close(fds[0]);
        close(fds[1]);
    }
}
