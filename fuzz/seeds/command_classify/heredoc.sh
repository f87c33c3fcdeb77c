cat <<'EOF' | sh
rm -rf /
EOF
echo `id` $'\x72m' ${HOME} $((1+2)) <(ls) ~/x {a,b}