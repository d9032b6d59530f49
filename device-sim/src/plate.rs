//! Chinese licence plates for the simulated cameras: one consistent format, generated
//! deterministically from a seed, and a check that a string has that format.
//!
//! The format is that of an ordinary (blue) plate written without the separator dot:
//! a province abbreviation, the city letter, and five serial characters, as in `湘A12345`.
//! Letters are A–Z without I and O (too easily read as 1 and 0). New-energy plates (six serial
//! characters), embassy, police and military plates are not generated and not accepted.
//!
//! Pure: no IO. Most generated plates are local (湘A, Changsha, where the demo park is), as
//! in a real park's car park.

/// The abbreviations of the 31 mainland provinces, regions and municipalities.
pub const PROVINCES: [char; 31] = [
    '京', '津', '沪', '渝', '冀', '豫', '云', '辽', '黑', '湘', '皖', '鲁', '新', '苏', '浙', '赣',
    '鄂', '桂', '甘', '晋', '蒙', '陕', '吉', '闽', '贵', '粤', '青', '藏', '川', '宁', '琼',
];

/// Letters allowed on a plate: A–Z without I and O.
const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";

fn is_plate_letter(c: char) -> bool {
    c.is_ascii_uppercase() && c != 'I' && c != 'O'
}

/// Whether `plate` has the simulator's format: province, city letter, five serial characters
/// (digits or plate letters, at most two letters), 7 characters in all, no dot or space.
///
/// ```
/// use device_sim::plate::is_valid_plate;
///
/// assert!(is_valid_plate("湘A12345"));
/// assert!(!is_valid_plate("湘A·12345"));
/// ```
pub fn is_valid_plate(plate: &str) -> bool {
    let chars: Vec<char> = plate.chars().collect();
    let [province, city, serial @ ..] = chars.as_slice() else {
        return false;
    };
    PROVINCES.contains(province)
        && is_plate_letter(*city)
        && serial.len() == 5
        && serial
            .iter()
            .all(|&c| c.is_ascii_digit() || is_plate_letter(c))
        && serial.iter().filter(|c| c.is_ascii_uppercase()).count() <= 2
}

/// Generates plates from a seed: about 60 % `湘A`, 15 % other Hunan cities and the rest from
/// anywhere. The same seed gives the same plates in the same order.
#[derive(Clone, Debug)]
pub struct PlateGenerator {
    rng: fastrand::Rng,
}

impl PlateGenerator {
    pub fn new(seed: u64) -> Self {
        PlateGenerator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn next_plate(&mut self) -> String {
        let rng = &mut self.rng;
        let (province, city) = match rng.u32(0..100) {
            0..60 => ('湘', 'A'),
            60..75 => ('湘', pick(rng, LETTERS)),
            _ => (PROVINCES[rng.usize(..PROVINCES.len())], pick(rng, LETTERS)),
        };
        let mut plate = String::with_capacity(12);
        plate.push(province);
        plate.push(city);
        let mut letters = 0;
        for _ in 0..5 {
            if letters < 2 && rng.u32(0..100) < 15 {
                letters += 1;
                plate.push(pick(rng, LETTERS));
            } else {
                plate.push(pick(rng, DIGITS));
            }
        }
        plate
    }

    /// `n` distinct plates.
    pub fn distinct(&mut self, n: usize) -> Vec<String> {
        let mut seen = std::collections::HashSet::with_capacity(n);
        let mut plates = Vec::with_capacity(n);
        while plates.len() < n {
            let plate = self.next_plate();
            if seen.insert(plate.clone()) {
                plates.push(plate);
            }
        }
        plates
    }
}

fn pick(rng: &mut fastrand::Rng, alphabet: &[u8]) -> char {
    char::from(alphabet[rng.usize(..alphabet.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_plates_are_valid_and_mostly_local() {
        let mut generator = PlateGenerator::new(1);
        let plates: Vec<String> = (0..2000).map(|_| generator.next_plate()).collect();
        for plate in &plates {
            assert!(is_valid_plate(plate), "{plate}");
            assert_eq!(plate.chars().count(), 7, "{plate}");
        }
        let local = plates.iter().filter(|p| p.starts_with("湘A")).count();
        assert!((1000..1500).contains(&local), "{local} of 2000 are 湘A");
        assert!(plates.iter().any(|p| !p.starts_with('湘')));
        assert!(plates.iter().any(|p| {
            p.chars()
                .enumerate()
                .any(|(i, c)| i >= 2 && c.is_ascii_uppercase())
        }));
    }

    #[test]
    fn the_same_seed_gives_the_same_plates() {
        assert_eq!(
            PlateGenerator::new(7).distinct(50),
            PlateGenerator::new(7).distinct(50)
        );
        assert_ne!(
            PlateGenerator::new(7).distinct(50),
            PlateGenerator::new(8).distinct(50)
        );
    }

    #[test]
    fn distinct_plates_are_distinct() {
        let plates = PlateGenerator::new(3).distinct(500);
        let unique: std::collections::HashSet<_> = plates.iter().collect();
        assert_eq!(unique.len(), 500);
    }

    #[test]
    fn plates_with_a_dot_a_wrong_length_or_forbidden_letters_are_refused() {
        for good in ["湘A12345", "京BD1234", "粤Z1A2B3", "琼A00000"] {
            assert!(is_valid_plate(good), "{good}");
        }
        for bad in [
            "湘A·12345",
            "湘A 12345",
            "湘A1234",
            "湘AD12345",
            "湘I12345",
            "湘A1O345",
            "湘a12345",
            "港A12345",
            "AA12345",
            "湘ABCD45",
            "湘A１2345",
            "",
        ] {
            assert!(!is_valid_plate(bad), "{bad}");
        }
    }
}
