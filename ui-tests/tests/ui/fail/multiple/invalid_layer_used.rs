use normkit::ndarray::Array4;
use normkit::prelude::*;

#[norm(input = "N,C,H,W", axes = "C,H,W", groups = 0, affine)]
struct GroupNorm;

fn main() {
    let mut gn = GroupNorm::<f32>::new(4);
    let x = Array4::<f32>::zeros((2, 4, 3, 3));
    let _ = gn.forward(x.view(), Mode::Train);
}
