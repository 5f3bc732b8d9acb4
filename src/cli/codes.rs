//! The one map from an error to its exit code: the first error of the
//! chain that knows its code (`exit::Coded`) decides; anything else is a
//! runtime failure. Commands report errors through it, never with a code
//! of their own choosing; outcomes that are not errors (a probe that saw
//! a mismatch, an exposed port, an invalid profile) keep theirs.

use crate::exit::{self, Coded};

/// The exit code of `err`.
pub fn of(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(code) = known(cause) {
            return code;
        }
    }
    exit::FAILURE
}

/// The exit code of one library error, without a chain.
pub fn of_error<E>(err: E) -> i32
where
    E: std::error::Error + Send + Sync + 'static,
{
    of(&anyhow::Error::new(err))
}

fn known(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if let Some(e) = e.downcast_ref::<crate::rollback::RollbackError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<crate::emit::EmitError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<crate::state::LockError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<crate::open::OpenError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<crate::nft::NftError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<crate::observe::journal::JournalError>() {
        return Some(e.exit_code());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_first_error_that_knows_its_code_decides() {
        let busy = crate::state::LockError::Busy { holder: "1".into() };
        let wrapped = Err::<(), _>(busy).context("applying").unwrap_err();
        assert_eq!(of(&wrapped), exit::REFUSED);
        let off = crate::nft::NftError::NoBans {
            table: "fwharden-bans".into(),
        };
        assert_eq!(of_error(off), exit::REFUSED);
        let raced = crate::rollback::RollbackError::Kernel(crate::nft::NftError::Raced);
        assert_eq!(of_error(raced), exit::FAILURE);
        assert_eq!(of(&anyhow::anyhow!("anything else")), exit::FAILURE);
    }
}
