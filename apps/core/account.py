"""The API tokens page and endpoint: create (key shown once) and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from apps.core.models import ApiToken
from apps.core.roles import perm
from apps.core.tokens import TokenError, create_token, revoke_token, visible_tokens


@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    new_key = ""
    if request.method == "POST":
        try:
            if "revoke" in request.POST:
                token = revoke_token(request.user, int(request.POST["revoke"] or 0))
                messages.success(request, f"Revoked the token {token.name!r}: it no longer works.")
                return redirect("api-tokens")
            token, new_key = create_token(request.user, request.POST.get("name", ""))
        except (TokenError, ValueError) as exc:
            messages.error(request, str(exc) if isinstance(exc, TokenError) else "No such token.")
            return redirect("api-tokens")
    context = {
        "tokens": visible_tokens(request.user),
        "new_key": new_key,
        "sees_all": request.user.has_perm(perm("manage_users")),
    }
    # The page with a fresh key must not linger in a shared cache or the back/forward cache.
    response = render(request, "core/tokens.html", context)
    response["Cache-Control"] = "no-store"
    return response


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "user", "created_at", "last_used_at"]
        read_only_fields = ["id", "prefix", "user", "created_at", "last_used_at"]


class ApiTokenViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
                      viewsets.GenericViewSet):
    """Your API tokens (everyone's for a user manager). Creating one (with a session, never with a
    token) answers its key, once."""

    serializer_class = ApiTokenSerializer
    # Any role may hold tokens; they carry exactly the rights of their user.
    write_permission = "view_studio"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ApiToken.objects.none()
        return visible_tokens(self.request.user)

    def create(self, request, *args, **kwargs):
        # A token that could mint tokens would let a leaked key outlive its own revocation.
        if not isinstance(request.successful_authenticator, SessionAuthentication):
            raise PermissionDenied("API tokens are created by a logged-in user (the Tokens page, or this "
                                   "endpoint with a session), not with another API token.")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, key = create_token(request.user, serializer.validated_data["name"])
        return Response({**self.get_serializer(token).data, "key": key}, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        revoke_token(request.user, self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
