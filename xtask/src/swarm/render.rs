//! Renders `deploy/stack.yaml`, the `docker stack deploy` form of the stack,
//! from the same typed description as `deploy/compose.yaml`.

use anyhow::bail;

/// Fails when the checked-in stack file is missing (placeholder until the
/// typed description lands).
pub fn ensure_stack_file_is_fresh() -> anyhow::Result<()> {
    let path = super::stack_file_path();
    if !path.exists() {
        bail!("{} is missing: run `cargo xtask render`", path.display());
    }
    Ok(())
}
