//! Owned libnftnl objects (table, chain, set, set element, rule): the same
//! small accessor set for each, generated once, so the unsafe code that
//! touches their pointers lives here and in [`super::expr`] only.

use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;

use nftnl::nftnl_sys::{self as sys, libc};

/// Interior NULs cannot be sent; names and comments are validated upstream,
/// so dropping them only guards against a panic.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

macro_rules! nftnl_object {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $alloc:ident, $free:ident,
     $set_str:ident, $set_u32:ident, $set_u64:ident, $set_data:ident,
     $get_str:ident, $get_u32:ident, $get_u64:ident, $get_data:ident, $is_set:ident) => {
        $(#[$doc])*
        pub struct $name(NonNull<$raw>);

        // Not every object uses every accessor.
        #[allow(dead_code)]
        impl $name {
            pub fn new() -> Self {
                // SAFETY: plain allocation; NULL only when out of memory,
                // where we abort as std does.
                match NonNull::new(unsafe { sys::$alloc() }) {
                    Some(p) => $name(p),
                    None => std::process::abort(),
                }
            }

            pub fn as_ptr(&self) -> *mut $raw {
                self.0.as_ptr()
            }

            // The setters and getters below share one argument: the object
            // is live (owned by `self`) and `attr` is one of libnftnl's
            // attribute numbers for this object, of the accessor's type.
            // libnftnl copies what is set and returns 0/NULL for what is not.

            pub fn set_str(&self, attr: u32, value: &str) {
                let c = c_string(value);
                // SAFETY: see above; `c` outlives the call.
                unsafe { sys::$set_str(self.as_ptr(), attr as u16, c.as_ptr()) };
            }

            pub fn set_u32(&self, attr: u32, value: u32) {
                // SAFETY: see above.
                unsafe { sys::$set_u32(self.as_ptr(), attr as u16, value) };
            }

            pub fn set_u64(&self, attr: u32, value: u64) {
                // SAFETY: see above.
                unsafe { sys::$set_u64(self.as_ptr(), attr as u16, value) };
            }

            pub fn set_data(&self, attr: u32, data: &[u8]) {
                // SAFETY: see above; `data` is valid for its length.
                unsafe {
                    sys::$set_data(
                        self.as_ptr(),
                        attr as u16,
                        data.as_ptr().cast::<c_void>(),
                        data.len() as u32,
                    )
                };
            }

            pub fn is_set(&self, attr: u32) -> bool {
                // SAFETY: see above.
                unsafe { sys::$is_set(self.as_ptr(), attr as u16) }
            }

            pub fn get_str(&self, attr: u32) -> String {
                // SAFETY: see above; the string is NUL-terminated and
                // copied before `self` can change.
                unsafe {
                    let p = sys::$get_str(self.as_ptr(), attr as u16);
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                }
            }

            pub fn get_u32(&self, attr: u32) -> u32 {
                // SAFETY: see above.
                unsafe { sys::$get_u32(self.as_ptr(), attr as u16) }
            }

            pub fn get_u64(&self, attr: u32) -> u64 {
                // SAFETY: see above.
                unsafe { sys::$get_u64(self.as_ptr(), attr as u16) }
            }

            pub fn get_data(&self, attr: u32) -> Vec<u8> {
                let mut len = 0u32;
                // SAFETY: see above; the pointer is valid for `len` bytes
                // and copied at once.
                unsafe {
                    let p = sys::$get_data(self.as_ptr(), attr as u16, &mut len);
                    if p.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec()
                    }
                }
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: allocated by the matching alloc, freed once.
                unsafe { sys::$free(self.as_ptr()) };
            }
        }
    };
}

nftnl_object!(
    /// `struct nftnl_table`
    Table, sys::nftnl_table, nftnl_table_alloc, nftnl_table_free,
    nftnl_table_set_str, nftnl_table_set_u32, nftnl_table_set_u64, nftnl_table_set_data,
    nftnl_table_get_str, nftnl_table_get_u32, nftnl_table_get_u64, nftnl_table_get_data,
    nftnl_table_is_set
);
nftnl_object!(
    /// `struct nftnl_chain`
    Chain, sys::nftnl_chain, nftnl_chain_alloc, nftnl_chain_free,
    nftnl_chain_set_str, nftnl_chain_set_u32, nftnl_chain_set_u64, nftnl_chain_set_data,
    nftnl_chain_get_str, nftnl_chain_get_u32, nftnl_chain_get_u64, nftnl_chain_get_data,
    nftnl_chain_is_set
);
nftnl_object!(
    /// `struct nftnl_set`, with its element list
    Set, sys::nftnl_set, nftnl_set_alloc, nftnl_set_free,
    nftnl_set_set_str, nftnl_set_set_u32, nftnl_set_set_u64, nftnl_set_set_data,
    nftnl_set_get_str, nftnl_set_get_u32, nftnl_set_get_u64, nftnl_set_get_data,
    nftnl_set_is_set
);
nftnl_object!(
    /// `struct nftnl_rule`, with its expressions
    Rule, sys::nftnl_rule, nftnl_rule_alloc, nftnl_rule_free,
    nftnl_rule_set_str, nftnl_rule_set_u32, nftnl_rule_set_u64, nftnl_rule_set_data,
    nftnl_rule_get_str, nftnl_rule_get_u32, nftnl_rule_get_u64, nftnl_rule_get_data,
    nftnl_rule_is_set
);

/// Which kind of object a message carries, to build and to parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Table,
    Chain,
    Set,
    SetElems,
    Rule,
}

/// A set element as the kernel lists it. `timeout_ms` is the timeout it
/// was added with (NFTA_SET_ELEM_TIMEOUT), not the time left
/// (NFTA_SET_ELEM_EXPIRATION, which counts down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelElem {
    pub key: Vec<u8>,
    /// The last key of a range (NFTA_SET_ELEM_KEY_END, concatenated
    /// interval sets only); empty for none.
    pub key_end: Vec<u8>,
    pub flags: u32,
    pub timeout_ms: Option<u64>,
    /// The time left before the kernel drops it, in ms.
    pub expires_ms: Option<u64>,
}

impl Set {
    /// Adds an element: its key, whether it ends an interval, and its user
    /// data (empty for none).
    pub fn add_elem(&self, key: &[u8], end: bool, udata: &[u8]) {
        // SAFETY: a fresh element is filled (libnftnl copies key and user
        // data) and handed to the set, which owns and frees it.
        unsafe {
            let Some(e) = NonNull::new(sys::nftnl_set_elem_alloc()) else {
                std::process::abort()
            };
            let e = e.as_ptr();
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast::<c_void>(),
                key.len() as u32,
            );
            if end {
                sys::nftnl_set_elem_set_u32(
                    e,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            if !udata.is_empty() {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    udata.as_ptr().cast::<c_void>(),
                    udata.len() as u32,
                );
            }
            sys::nftnl_set_elem_add(self.as_ptr(), e);
        }
    }

    /// The set's elements, in the order libnftnl holds them.
    pub fn elems(&self) -> Vec<KernelElem> {
        /// Called by `nftnl_set_elem_foreach` only, with the `data` given
        /// to it below and each element of the set.
        unsafe extern "C" fn each(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> i32 {
            // SAFETY: `data` is the Vec below, alive during the foreach;
            // `e` is a live element of the set.
            unsafe {
                let out = &mut *data.cast::<Vec<KernelElem>>();
                let mut len = 0u32;
                let p = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
                let key = if p.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec()
                };
                let p = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY_END as u16, &mut len);
                let key_end = if p.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec()
                };
                let flags = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                    sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                } else {
                    0
                };
                let timeout = sys::NFTNL_SET_ELEM_TIMEOUT as u16;
                let timeout_ms = sys::nftnl_set_elem_is_set(e, timeout)
                    .then(|| sys::nftnl_set_elem_get_u64(e, timeout));
                let expiration = sys::NFTNL_SET_ELEM_EXPIRATION as u16;
                let expires_ms = sys::nftnl_set_elem_is_set(e, expiration)
                    .then(|| sys::nftnl_set_elem_get_u64(e, expiration));
                out.push(KernelElem {
                    key,
                    key_end,
                    flags,
                    timeout_ms,
                    expires_ms,
                });
            }
            0
        }
        let mut out: Vec<KernelElem> = Vec::new();
        // SAFETY: the set is live; the callback runs only during the call.
        unsafe {
            sys::nftnl_set_elem_foreach(
                self.as_ptr(),
                Some(each),
                (&mut out as *mut Vec<KernelElem>).cast::<c_void>(),
            )
        };
        out
    }
}

impl Rule {
    /// Appends an expression; the rule owns it from now on.
    pub fn add_expr(&self, e: super::expr::RawExpr) {
        // SAFETY: both live; ownership of the expression passes to the rule.
        unsafe { sys::nftnl_rule_add_expr(self.as_ptr(), e.into_raw()) };
    }

    /// The rule's expressions, decoded.
    pub fn exprs(&self) -> Vec<super::expr::Expr> {
        /// Called by `nftnl_expr_foreach` only, with the `data` given to
        /// it below and each expression of the rule.
        unsafe extern "C" fn each(e: *mut sys::nftnl_expr, data: *mut c_void) -> i32 {
            // SAFETY: `data` is the Vec below, alive during the foreach;
            // `e` is a live expression of the rule.
            unsafe {
                let out = &mut *data.cast::<Vec<super::expr::Expr>>();
                out.push(super::expr::Expr::from_raw(e));
            }
            0
        }
        let mut out: Vec<super::expr::Expr> = Vec::new();
        // SAFETY: the rule is live; the callback runs only during the call.
        unsafe {
            sys::nftnl_expr_foreach(
                self.as_ptr(),
                Some(each),
                (&mut out as *mut Vec<super::expr::Expr>).cast::<c_void>(),
            )
        };
        out
    }
}
