package seed

// GenerateWith is Generate with the given number of batches written side by side.
var GenerateWith = generate
