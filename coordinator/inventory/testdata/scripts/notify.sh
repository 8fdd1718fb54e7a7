#!/bin/sh
echo "rotation done"
