//! Text renderings of the ruleset model.

pub mod nft;

pub use nft::nft_text;
