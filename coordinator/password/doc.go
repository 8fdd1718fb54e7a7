// Package password generates passwords from complexity rules with a
// cryptographic source.
//
// # Rules
//
// [Rules] mirrors the "Password Complexity" of a PAM User's rotation
// settings: a length and a minimum count for each character class
// (uppercase, lowercase, digits, special). A zero Length means
// [DefaultLength]; an empty SpecialChars means [DefaultSpecialChars].
// [Rules.Validate] refuses rule sets that cannot be satisfied; every problem
// is a [*RuleError] naming the rule, and all of them match [ErrInvalidRules]
// with [errors.Is].
//
// # Generation
//
// [Generate] draws every character and every shuffle index from
// [crypto/rand] by rejection sampling, so no choice is biased by a modulo:
//
//  1. the minimum of each class is drawn from that class,
//  2. the remaining characters are drawn from the union of all four classes,
//  3. the result is shuffled with an unbiased Fisher–Yates shuffle, so the
//     guaranteed characters are not predictably placed.
//
// The union includes every class, even those whose minimum is zero: a
// minimum is a floor, not a switch.
package password
