#!/bin/sh
# Runs on the gateway after the machine's scripts. Reads the payload with
# `cat | base64 --decode` and tells the team which account was rotated.
payload=$(cat | base64 --decode)
uid=$(printf '%s' "$payload" | sed -n 's/.*"userRecordUid":"\([^"]*\)".*/\1/p')
echo "notified #ops: the password of record ${uid} was rotated"
