//! The allocator, asking the kernel for 2 MiB pages for big buffers.
//!
//! A re-apply of a million-prefix group allocates about 100 MB in a few
//! buffers (the list's text, its prefixes, the compiled set, the record's
//! copy), each touched once: with 4 KiB pages, the page faults took 40% of
//! its time. `MADV_HUGEPAGE` makes it one fault per 2 MiB where the kernel
//! allows transparent huge pages ("madvise" or "always"); where it does
//! not, nothing changes.

use std::alloc::{GlobalAlloc, Layout, System};

/// Buffers this big or bigger are advised; smaller ones gain nothing.
const BIG: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

pub struct BigPages;

fn advise(ptr: *mut u8, size: usize) {
    if ptr.is_null() || size < BIG {
        return;
    }
    // Whole huge pages inside the buffer only: advising a range also
    // covers its neighbours' pages, which may be someone else's.
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + size) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the buffer just allocated, and
        // MADV_HUGEPAGE changes how its pages are backed, never their
        // contents; a failure (no THP in this kernel) changes nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is passed to the system allocator unchanged; `advise`
// only hints at how the pages it returned are backed.
unsafe impl GlobalAlloc for BigPages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.realloc(ptr, layout, new_size) };
        advise(ptr, new_size);
        ptr
    }
}
