//! The no_std runtime of a plugin: allocator and panic handler.
//!
//! The host instantiates a plugin afresh for every decision and throws the instance
//! away afterwards, so a bump allocator is enough and the cheapest there is: nothing is
//! ever returned to a free list, except that freeing or growing the most recent block
//! works in place (which covers `Vec`/`String` growth). Memory runs out at the host's
//! cap, and then the allocation fails, which panics, which traps: a denial.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 65536;

struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// Wasm components here are single-threaded.
unsafe impl Sync for Bump {}

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and static data.
    static __heap_base: u8;
}

impl Bump {
    fn reserve(&self, start: usize, size: usize) -> *mut u8 {
        let Some(new_next) = start.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if new_next > self.end.get() {
            let pages = (new_next - self.end.get()).div_ceil(PAGE);
            if wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        self.next.set(new_next);
        start as *mut u8
    }

    fn init(&self) {
        if self.end.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
            self.end.set(wasm32::memory_size(0) * PAGE);
        }
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.init();
        let align = layout.align();
        let Some(start) = self.next.get().checked_add(align - 1) else {
            return core::ptr::null_mut();
        };
        self.reserve(start & !(align - 1), layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ptr as usize + layout.size() == self.next.get() {
            // The last block: grow or shrink it where it is.
            return self.reserve(ptr as usize, new_size);
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller's layout is valid; the new one has the same alignment.
        let new = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct (bump blocks never overlap).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Bump = Bump { next: Cell::new(0), end: Cell::new(0) };

/// Formats into a fixed buffer: the panic may be an out-of-memory one.
struct Buf {
    bytes: [u8; 512],
    len: usize,
}

impl core::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

static mut PANICKING: bool = false;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // SAFETY: single-threaded; a panic while logging a panic goes straight to the trap.
    unsafe {
        if !PANICKING {
            PANICKING = true;
            let mut buf = Buf { bytes: [0; 512], len: 0 };
            let _ = core::fmt::write(&mut buf, format_args!("plugin panicked: {info}"));
            if let Ok(message) = core::str::from_utf8(&buf.bytes[..buf.len]) {
                crate::log::error(message);
            }
        }
    }
    wasm32::unreachable()
}

/// The canonical ABI's allocator, through which the host passes requests and registry
/// answers in. wit-bindgen expects std (wasi-libc) to provide it on wasm32-wasip2;
/// without std, the plugin exports it itself.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the host passes a power-of-two alignment, and old_ptr/old_len describe a
    // block this allocator gave out (the canonical ABI's contract).
    let ptr = unsafe {
        if old_len == 0 {
            ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            ALLOCATOR.realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        // Out of memory (the host's cap): trap through the panic handler.
        panic!("out of memory allocating {new_len} bytes for the host");
    }
    ptr
}

// A `no_std` guest links no libc, and compiler-builtins does not export these
// two for wasm32-wasip2: without them any longer string comparison (`==`,
// `contains`) leaves an `env::memcmp` import and the component fails to link.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are readable for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
