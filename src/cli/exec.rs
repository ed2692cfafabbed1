//! The client of `exec`: after the answer line it sends stdin (`-i`) and
//! terminal sizes (`-t`) as frames from two threads, and prints the output
//! frames until the exit frame, whose code becomes its own.
//!
//! As kubectl does: `-t` without a terminal on stdin is dropped with
//! kubectl's warning; the local terminal is put in raw mode only with both
//! `-i` and `-t`, and restored however the command ends.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::proto::{ExecStart, Request, frame};
use super::{Conn, Error, ExecArgs};

/// Set by the SIGWINCH handler; read by the resize thread.
static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::Relaxed);
}

fn is_terminal(fd: libc::c_int) -> bool {
    // SAFETY: isatty(3) only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's (columns, rows).
fn window_size(fd: libc::c_int) -> Option<(u16, u16)> {
    // SAFETY: `winsize` is plain integers; all zeroes is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The terminal in raw mode until dropped.
struct RawMode {
    fd: libc::c_int,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: libc::c_int) -> std::io::Result<RawMode> {
        // SAFETY: tcgetattr fills the zeroed termios; cfmakeraw and
        // tcsetattr read it.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

fn send(w: &Mutex<UnixStream>, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    w.write_all(bytes)
}

pub fn run(a: ExecArgs, socket: &Path) -> Result<(), Error> {
    let mut tty = a.tty;
    if tty && !is_terminal(0) {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        tty = false;
    }
    let size = if tty { window_size(0) } else { None };
    let mut c = Conn::open(
        socket,
        &Request::Exec(ExecStart {
            namespace: a.namespace,
            pod: a.pod,
            container: a.container,
            command: a.command,
            stdin: a.stdin,
            tty,
            size,
        }),
    )?;
    let head = c.answer()?;
    if head["defaulted"].as_bool() == Some(true) {
        eprintln!(
            "Defaulted container {:?} (use -c to choose another)",
            head["container"].as_str().unwrap_or("")
        );
    }
    let writer = Arc::new(Mutex::new(c.reader.get_ref().try_clone()?));
    let raw = if tty && a.stdin {
        Some(RawMode::enter(0)?)
    } else {
        None
    };
    if tty {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t);
        }
        let w = Arc::clone(&writer);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                if WINCH.swap(false, Ordering::Relaxed)
                    && let Some((cols, rows)) = window_size(0)
                    && send(&w, &frame::resize(cols, rows)).is_err()
                {
                    return;
                }
            }
        });
    }
    if a.stdin {
        let w = Arc::clone(&writer);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                // An empty frame is the end of the input.
                if send(&w, &frame::encode(frame::STDIN, &buf[..n])).is_err() || n == 0 {
                    return;
                }
            }
        });
    }
    let ended = pump(&mut c);
    drop(raw);
    match ended? {
        0 => Ok(()),
        code => Err(Error::Exited(code)),
    }
}

/// Prints output frames until the exit frame; its code.
fn pump(c: &mut Conn) -> Result<u32, Error> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    loop {
        let Some((stream, payload)) = frame::read(&mut c.reader)? else {
            return Err(Error::Agent(
                "the agent ended the exec without an exit code".into(),
            ));
        };
        match stream {
            frame::STDOUT => {
                stdout.write_all(&payload)?;
                stdout.flush()?;
            }
            frame::STDERR => {
                stderr.write_all(&payload)?;
                stderr.flush()?;
            }
            frame::EXIT => {
                let code: [u8; 4] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Agent(format!("exit frame of {} bytes", payload.len())))?;
                return Ok(u32::from_be_bytes(code));
            }
            frame::ERROR => {
                return Err(Error::Agent(String::from_utf8_lossy(&payload).into_owned()));
            }
            _ => {}
        }
    }
}
