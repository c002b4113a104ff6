<?php
// Verify a PenguinMails webhook (Standard Webhooks) with PHP's hash extension only.
// $secret as you chose or received it: a `whsec_...` secret's key is the base64 after the
// prefix, any other secret's key is its UTF-8 bytes.
function verify_webhook(string $secret, array $headers, string $rawBody, int $tolerance = 300): bool
{
    $id = $headers['webhook-id'] ?? null;
    $timestamp = $headers['webhook-timestamp'] ?? null;
    $signatures = $headers['webhook-signature'] ?? null;
    if (!$id || !$timestamp || !$signatures || !ctype_digit($timestamp)) {
        return false;
    }
    if (abs(time() - (int) $timestamp) > $tolerance) {
        return false; // replay
    }
    $key = str_starts_with($secret, 'whsec_')
        ? base64_decode(substr($secret, 6), true)
        : $secret;
    $expected = base64_encode(hash_hmac('sha256', "{$id}.{$timestamp}." . $rawBody, $key, true));
    foreach (explode(' ', $signatures) as $entry) {
        [$version, $value] = array_pad(explode(',', $entry, 2), 2, '');
        if ($version === 'v1' && hash_equals($expected, $value)) {
            return true;
        }
    }
    return false;
}
