//! A macro for the one-byte coded enums of the protocol vocabulary.

/// Defines a `#[repr(u8)]` enum with explicit wire codes, `ALL`, `code()`,
/// `From<Self> for u8` and `TryFrom<u8>` (unknown codes are an error, never a panic).
///
/// One macro so that the code table is written once and the decoder cannot drift from the
/// encoder.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every variant, in code order (for generators and exhaustive tests).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one-byte wire code.
            pub const fn code(self) -> u8 {
                self as u8
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::codec::UnknownCode;

            fn try_from(code: u8) -> Result<Self, Self::Error> {
                match code {
                    $( $code => Ok($name::$variant), )+
                    _ => Err($crate::codec::UnknownCode { what: stringify!($name), code }),
                }
            }
        }
    };
}
