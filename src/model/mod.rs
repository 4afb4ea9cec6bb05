//! Encoders: ResNet backbones with the MoCo projection head ([`resnet`]), their parameters
//! ([`params`]), layers ([`layers`]), and loading them from checkpoints ([`load`]).
//! See [`resnet`] for the full tensor-name map (torchvision's).

pub mod layers;
pub mod load;
pub mod params;
pub mod resnet;

pub use layers::BnMode;
pub use params::{Kind, ParamStore};
pub use resnet::{ConvSpec, Encoder};
