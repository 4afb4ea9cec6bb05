//! Encoders: ResNet backbones with the MoCo projection head, their parameters, and layers.
//! See [`resnet`] for the full tensor-name map (torchvision's).

pub mod layers;
pub mod params;
pub mod resnet;

pub use layers::BnMode;
pub use params::{Kind, ParamStore};
pub use resnet::{ConvSpec, Encoder};
