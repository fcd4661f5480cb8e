//! Secrets as values that cannot leak by accident: `Debug` and `Display` print
//! `[redacted]`, there is no `Serialize`, and the memory is wiped on drop. The only
//! way to the text is [`Secret::expose`], so every use is visible in review.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A token, secret or verifier.
///
/// ```rust
/// use keyway::Secret;
///
/// let token = Secret::new("tok-123");
/// assert_eq!(format!("{token:?}"), "Secret([redacted])");
/// assert_eq!(token.to_string(), "[redacted]");
/// assert_eq!(token.expose(), "tok-123");
/// ```
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`; from here on it prints as `[redacted]`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text. Call it only where the value leaves keyway on purpose (an
    /// `Authorization` header, the encrypted store).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
        assert_eq!(s.expose(), "tok-123");
    }
}
