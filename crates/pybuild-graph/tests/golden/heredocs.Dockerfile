FROM alpine
RUN <<EOT bash
  set -ex
  echo "$HOME"
EOT
RUN <<-"EOT" cat > /quoted
	no $expansion here
	EOT
COPY <<one.txt <<two.txt /dst/
first
one.txt
second
two.txt
ONBUILD RUN <<X
echo trigger
X
