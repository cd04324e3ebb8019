//! `sysgenid-bench`: measures the device's per-call costs against baselines in the same run.
fn main() {}
