//! The few calls rustix does not offer (or offers only as experimental runtime calls):
//! fork, execve, signal masks and waiting, and the `SIOCSIFFLAGS` ioctl. Every one is a
//! thin wrapper; callers are the single-threaded init only.

use std::ffi::CString;
use std::io;

use rustix::process::Pid;

/// `fork()`: `None` in the child, the child's pid in the parent.
///
/// Only called in the sandbox init, which is single-threaded (it is a freshly
/// executed program that never starts threads), so the child is a complete copy.
pub(crate) fn fork() -> io::Result<Option<Pid>> {
    // SAFETY: the init process is single-threaded, so no lock or allocator state held
    // by another thread can be left inconsistent in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// Signals the inits handle themselves: forwarded to the child, or SIGCHLD.
pub(crate) const HANDLED: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

extern "C" fn noop_handler(_: libc::c_int) {}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks [`HANDLED`] and gives them a no-op handler. Blocked signals are queued for
/// [`wait_signal`]; the handler matters for PID 1 of a namespace, which the kernel
/// otherwise shields from signals it has left at `SIG_DFL` (pid_namespaces(7)).
pub(crate) fn take_over_signals() -> io::Result<()> {
    let set = sigset(&HANDLED);
    for &s in &HANDLED {
        // SAFETY: a zeroed sigaction with a valid handler address and empty mask is a
        // valid argument; the handler does nothing, so it is async-signal-safe.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = noop_handler as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = libc::SA_RESTART;
            libc::sigaction(s, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores default dispositions and an empty mask (in the command's process, before
/// `execve`). Exec resets caught signals but keeps ignored ones and the mask, and the
/// Rust runtime ignores SIGPIPE: left alone, `yes | head -1` would never end by
/// SIGPIPE inside a RUN.
pub(crate) fn reset_signals() {
    // The raw system call, because glibc refuses the two real-time signals it reserves
    // (32 and 33), which may arrive ignored from whoever started the caller.
    let dfl = [0u64; 4];
    for s in 1..=64 {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero kernel `struct sigaction` (whatever the architecture's
        // field order) is SIG_DFL, no flags, an empty mask; 32 bytes cover every layout;
        // the old action is not requested; 8 is the kernel's sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                s,
                dfl.as_ptr(),
                std::ptr::null_mut::<u8>(),
                8usize,
            )
        };
    }
    let empty = sigset(&[]);
    // SAFETY: `empty` is initialised.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
}

/// Waits for one of the blocked [`HANDLED`] signals.
pub(crate) fn wait_signal() -> io::Result<i32> {
    let set = sigset(&HANDLED);
    loop {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let s = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if s >= 0 {
            return Ok(s);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `execve(path, argv, envp)`; returns only on failure.
pub(crate) fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: every pointer is a NUL-terminated string kept alive by `argv`/`envp`
    // for the duration of the call; both arrays end with a null pointer.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// Ends a forked child at once, without running exit handlers or flushing buffers it
/// shares with its parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Sets `IFF_UP` on `lo` (in a new network namespace it starts down).
pub(crate) fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags member of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member was just written by the kernel.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes every mount of a detached tree (from `open_tree`) read-only. Only adds a
/// restriction, so it is allowed on mounts locked by a user namespace, where a bind
/// remount that does not repeat their other flags is refused.
pub(crate) fn set_tree_read_only(tree: &std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `tree` is an open mount fd, the path is an empty NUL-terminated string
    // (with AT_EMPTY_PATH the fd itself is meant), `attr` is a valid mount_attr of the
    // size passed, and the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
